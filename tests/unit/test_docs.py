"""The README documents every setting exactly as the settings table says (regenerate with
`python -m deploygate.shells.docs --write README.md`), and the CLI takes every one of them."""

from __future__ import annotations

from pathlib import Path

from deploygate.core.settings import SETTINGS
from deploygate.shells.cli import build_parser
from deploygate.shells.docs import render_blocks

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_generated_blocks_are_current():
    text = README.read_text()
    assert "<!-- settings:start -->" in text
    assert render_blocks(text) == text, "run: python -m deploygate.shells.docs --write README.md"


def test_cli_has_a_flag_for_every_setting():
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    for s in SETTINGS:
        assert f"--{s.name}" in help_text


def test_readme_quick_start_commands_exist():
    text = README.read_text()
    assert "bash scripts/demo.sh" in text and "bash .ci/run" in text
    assert Path(README.parent, "scripts", "demo.sh").exists()
