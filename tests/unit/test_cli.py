"""The command line a newcomer meets: `deploygate --help`, help text for every flag, no abbreviations,
and a `.env` file python-dotenv cannot parse (exit 2 naming the line, nothing loaded)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from deploygate.core.errors import ConfigError
from deploygate.core.settings import SETTINGS
from deploygate.shells.cli import build_parser, load_env_file, main


def parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"deploygate": top, **sub.choices}


def test_help_shows_the_gates_flags_and_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: deploygate [run] [options]")
    for s in SETTINGS:
        assert f"--{s.name}" in out
    for command in parsers():
        if command != "deploygate":
            assert f"\n  {command} " in out, command
    assert "Exit codes: 0 decided" in out


def test_every_flag_of_every_command_has_help():
    for name, parser in parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, (
                name,
                action.option_strings,
            )


def test_no_parser_accepts_abbreviations(capsys):
    assert all(p.allow_abbrev is False for p in parsers().values())
    assert main(["--min", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --min 0.5" in err and "usage: deploygate [run]" in err
    assert main(["doctor", "--mlflow", "http://x"]) == 2


def test_env_file_sets_only_what_the_environment_lacks(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# local settings\nexport MLFLOW_TRACKING_URI=http://from-file:5000\nHF_TOKEN='hf_x y'\n"
        "EMPTY=\nALREADY=file\n"
    )
    env = {"ALREADY": "environment"}
    assert load_env_file(env_file, env) == ("MLFLOW_TRACKING_URI", "HF_TOKEN", "EMPTY")
    assert env == {
        "ALREADY": "environment",
        "MLFLOW_TRACKING_URI": "http://from-file:5000",
        "HF_TOKEN": "hf_x y",
        "EMPTY": "",
    }
    assert load_env_file(tmp_path / "missing", env) == ()


@pytest.mark.parametrize(
    ("text", "line", "name"),
    [
        ('A=1\nHF_TOKEN = "hf_secret_unterminated\nB=2\n', 2, "HF_TOKEN"),
        ("A=1\n\nnot a line at all\n", 3, None),
        ("'unclosed=1\n", 1, None),
    ],
)
def test_a_broken_env_file_is_exit_2_naming_the_line(tmp_path, monkeypatch, capsys, text, line, name):
    (tmp_path / ".env").write_text(text)
    env: dict[str, str] = {}
    with pytest.raises(ConfigError) as err:
        load_env_file(tmp_path / ".env", env)
    assert env == {}  # nothing loaded from a file that is partly wrong
    message = str(err.value)
    assert f"line {line}" in message and "\n" not in message and "hf_secret" not in message
    if name:
        assert f"(the {name} line)" in message
    monkeypatch.chdir(tmp_path)
    assert main(["--evaluation-results", "nope.json"]) == 2  # before anything else is read
    err_text = capsys.readouterr().err
    assert f".env: {tmp_path / '.env'} line {line}" in err_text and "nope.json" not in err_text
