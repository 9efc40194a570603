"""The GitHub adapter: escaping of workflow and file commands, and the sticky comment client."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploygate.adapters.github_runner import (
    SUMMARY_BUDGET_BYTES,
    SUMMARY_LIMIT_BYTES,
    PullRequestComments,
    Runner,
    _next_link,
    command,
    escape_data,
    escape_property,
    fit_utf8,
    mask_values,
    output_record,
)
from deploygate.core.errors import GitHubError
from tests.action.harness import parse_github_output
from tests.github_api_server import GitHubApi, running_github_api


@pytest.fixture
def api() -> Iterator[GitHubApi]:
    with running_github_api() as server:
        yield server


NASTY = [
    "",
    "plain",
    "100% sure",
    "two\nlines",
    "cr\r\nlf",
    "::set-output name=x::y",
    "::error::forged\n::add-mask::x",
    "%0A already escaped %25",
    "name<<EOF\nEOF",
    "ghadelimiter_0123456789abcdef0123456789abcdef",
    "trailing newline\n",
    "ünïcödé ✓ 🚀",
]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a%b", "a%25b"), ("a\nb", "a%0Ab"), ("a\rb", "a%0Db"), ("%0A", "%250A"), ("a:b,c", "a:b,c")],
)
def test_escape_data(raw: str, escaped: str) -> None:
    assert escape_data(raw) == escaped


def test_escape_property_also_escapes_colon_and_comma() -> None:
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


@pytest.mark.parametrize("message", NASTY)
def test_a_command_is_always_one_line(message: str) -> None:
    line = command("error", message, title="deploy:gate, v1")
    assert "\n" not in line and "\r" not in line
    assert line.startswith("::error title=deploy%3Agate%2C v1::")


def test_command_without_properties() -> None:
    assert command("add-mask", "s3cr\net") == "::add-mask::s3cr%0Aet"
    assert command("group", "x") == "::group::x"


@pytest.mark.parametrize("value", NASTY)
def test_output_records_round_trip_through_the_runner_parser(value: str) -> None:
    text = output_record("reason", value) + output_record("deployed", "true")
    assert parse_github_output(text) == {"reason": value, "deployed": "true"}


def test_output_names_that_would_break_the_file_are_refused() -> None:
    for name in ("", "a\nb", "a=b", "a<<b", " a"):
        with pytest.raises(ValueError):
            output_record(name, "x")


def test_runner_appends_outputs_and_summary(tmp_path: Path) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary"
    out.write_text("earlier=1\n")
    summary.write_text("# earlier step\n")
    stream = io.StringIO()
    runner = Runner({"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}, stream)
    runner.set_outputs({"decision": "skip", "reason": "a\nb ::warning::x"})
    runner.append_summary("## report")
    assert parse_github_output(out.read_text()) == {
        "earlier": "1",
        "decision": "skip",
        "reason": "a\nb ::warning::x",
    }
    assert summary.read_text() == "# earlier step\n## report\n"


def test_runner_without_files_only_prints(tmp_path: Path) -> None:
    stream = io.StringIO()
    runner = Runner({}, stream)
    runner.set_outputs({"a": "b"})
    runner.append_summary("x")
    runner.warning("w")
    assert stream.getvalue() == "::warning title=deploygate::w\n"


def test_summary_never_passes_the_runner_limit(tmp_path: Path) -> None:
    summary = tmp_path / "summary"
    summary.write_text("x" * 1000)
    runner = Runner({"GITHUB_STEP_SUMMARY": str(summary)}, io.StringIO())
    runner.append_summary("é" * SUMMARY_LIMIT_BYTES)  # 2 MiB of UTF-8
    size = summary.stat().st_size
    assert SUMMARY_BUDGET_BYTES - 1024 < size <= SUMMARY_BUDGET_BYTES < SUMMARY_LIMIT_BYTES
    summary.read_text(encoding="utf-8")  # still valid UTF-8: cut at a character boundary
    runner.append_summary("more")  # full: nothing more is added
    assert summary.stat().st_size == size


def test_fit_utf8_cuts_at_a_character_boundary() -> None:
    assert fit_utf8("abc", 3, "!") == "abc"
    assert fit_utf8("ééé", 4, "!") == "é!"


def test_masks_cover_each_line_of_a_multiline_secret() -> None:
    assert mask_values("  tok  ") == ["tok"]
    assert mask_values("") == []
    assert mask_values("line1\nline2") == ["line1\nline2", "line1", "line2"]
    stream = io.StringIO()
    runner = Runner({}, stream)
    runner.add_mask("a%b\nc")
    runner.add_mask("a%b\nc")  # once is enough
    assert stream.getvalue().splitlines() == ["::add-mask::a%25b%0Ac", "::add-mask::a%25b", "::add-mask::c"]


def test_group_and_quiet_are_balanced() -> None:
    stream = io.StringIO()
    runner = Runner({}, stream)
    with runner.group("step: one"), runner.quiet():
        runner.emit("::error::from a log")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "::group::step: one"
    token = lines[1].removeprefix("::stop-commands::")
    assert len(token) == 32 and lines[3] == f"::{token}::" and lines[4] == "::endgroup::"


def test_next_link() -> None:
    header = '<https://api/x?page=2>; rel="next", <https://api/x?page=5>; rel="last"'
    assert _next_link(header) == "https://api/x?page=2"
    assert _next_link('<https://api/x?page=1>; rel="prev"') is None
    assert _next_link("") is None


def test_comment_is_created_then_updated_across_pages(api: GitHubApi) -> None:
    state = api.state
    state.seed("o/r", 1, [f"c{i}" for i in range(12)])
    client = PullRequestComments(api.url, state.token, "o/r")
    first = client.upsert(1, "verdict one")
    assert first.status == "created" and first.url
    state.seed("o/r", 1, [f"later {i}" for i in range(6)])  # the marker comment is now on page 3 of 4
    second = client.upsert(1, "<!-- deploygate -->\nverdict two")
    assert second.status == "updated"
    bodies = state.bodies("o/r", 1)
    assert len(bodies) == 19
    assert [b for b in bodies if b.startswith("<!-- deploygate -->")] == ["<!-- deploygate -->\nverdict two"]


def test_a_comment_quoting_the_marker_is_not_taken_for_ours(api: GitHubApi) -> None:
    state = api.state
    state.seed("o/r", 2, ["> quoting <!-- deploygate --> here"])
    assert PullRequestComments(api.url, state.token, "o/r").upsert(2, "x").status == "created"


def test_read_only_token_and_bad_token_are_forbidden_not_errors(api: GitHubApi) -> None:
    state = api.state
    state.read_only_repos.add("o/r")
    outcome = PullRequestComments(api.url, state.token, "o/r").upsert(3, "x")
    assert outcome.status == "forbidden" and "403" in outcome.detail
    assert PullRequestComments(api.url, "wrong", "o/r").upsert(3, "x").status == "forbidden"


def test_unreachable_api_is_a_github_error() -> None:
    with pytest.raises(GitHubError, match="unreachable"):
        PullRequestComments("http://127.0.0.1:9", "t", "o/r", timeout=5).upsert(1, "x")
    with pytest.raises(GitHubError, match="owner/name"):
        PullRequestComments("http://127.0.0.1:9", "t", "nope")


def test_comment_body_is_cut_to_the_api_limit(api: GitHubApi) -> None:
    client = PullRequestComments(api.url, api.state.token, "o/r")
    client.upsert(4, "x" * 100_000)
    (body,) = api.state.bodies("o/r", 4)
    assert len(body) <= 65_536 and body.startswith("<!-- deploygate -->")


def test_where_actions_toolkit_is_wrong_for_us(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cases deploygate/adapters/github_runner.py names for keeping its own code, shown on the
    toolkit itself: if a release of the toolkit fixes one, this test says so."""
    from actions_toolkit import core

    core.error("m", title="t")  # every annotation property, empty ones too
    assert capsys.readouterr().out.strip() == "::error title=t,file=,line=,endLine=,col=,endColumn=::m"
    assert command("error", "m", title="t") == "::error title=t::m"
    monkeypatch.setenv("INPUT_FORCE_DEPLOY", "true")  # the spelling a /bin/sh wrapper passes
    assert core.get_input("force-deploy") == ""
    monkeypatch.setenv("INPUT_FORCE-DEPLOY", "yes")  # a boolean deploygate's settings accept
    with pytest.raises(TypeError):
        core.get_boolean_input("force-deploy")
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    core.set_output("deployed", "true")  # outside Actions: the ::set-output command GitHub disabled
    assert "::set-output name=deployed::true" in capsys.readouterr().out
