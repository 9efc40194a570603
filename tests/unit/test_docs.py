"""docs/reference.md documents every setting exactly as the settings table says (regenerate with
`python -m deploygate.shells.docs --write docs/reference.md`), the CLI takes every one of them, and the
README's quick start and links point at things that exist."""

from __future__ import annotations

from pathlib import Path

from deploygate.core.settings import SETTINGS
from deploygate.shells.cli import build_parser
from deploygate.shells.docs import render_blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"


def test_reference_generated_blocks_are_current():
    text = REFERENCE.read_text()
    for block in ("settings", "action-inputs", "action-outputs"):
        assert f"<!-- {block}:start -->" in text, block
    assert render_blocks(text) == text, "run: python -m deploygate.shells.docs --write docs/reference.md"


def test_cli_has_a_flag_for_every_setting():
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    for s in SETTINGS:
        assert f"--{s.name}" in help_text


def test_readme_quick_start_commands_exist():
    text = README.read_text()
    assert "bash scripts/demo.sh" in text and "bash .ci/run" in text
    assert Path(README.parent, "scripts", "demo.sh").exists()


def test_readme_links_point_at_files_that_exist():
    import re

    for doc in (README, *sorted((ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), (
                f"{doc.relative_to(ROOT)} links to {target}, which does not exist"
            )
