"""The GitHub adapter: the runner's file commands and workflow commands, and the sticky PR comment.

Everything that ends up in a runner file or on the log as a workflow command goes through here,
escaped, so that a value with newlines, `%`, `::` or the output delimiter cannot forge a command or
break the outputs file. It must not decide anything, read settings or know about the gate: the
action shell hands it strings. Only the standard library (urllib) talks to the REST API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from actions_toolkit import command as toolkit_command
from actions_toolkit.file_command import prepare_key_value_message

from deploygate.core.errors import GitHubError
from deploygate.core.redact import RedactingFormatter, redact, remember

log = logging.getLogger(__name__)

# A step summary over 1 MiB is dropped by the runner (with an error on the run page); stay below.
SUMMARY_LIMIT_BYTES = 1024 * 1024
SUMMARY_BUDGET_BYTES = SUMMARY_LIMIT_BYTES - 16 * 1024
# An issue comment body is at most 65536 characters.
COMMENT_LIMIT_CHARS = 65_536
COMMENT_MARKER = "<!-- deploygate -->"
_TRUNCATED = "\n\n> [!NOTE]\n> This report was cut to fit GitHub's size limit; the full files are in the run's artifacts.\n"

# --- workflow commands and output records: actions-toolkit's -------------------------------------
#
# The toolkit (PyPI actions-toolkit, the Python port of @actions/core) formats and escapes the
# commands and writes the output records. Only its `command` and `file_command` modules are used:
# `actions_toolkit.github` imports PyGithub, which deploygate does not load. Where the toolkit is
# wrong for a container action, deploygate keeps its own code, each case named where it is kept:
#   - its functions print to sys.stdout and read os.environ; the shells hand this adapter a stream and
#     an env mapping (tests, and the CLI's own printing, need both), so the lines are built with
#     `Command` and written here;
#   - `core.error(msg, title=...)` sends every annotation property, empty ones too
#     (`::error title=x,file=,line=,endLine=,col=,endColumn=::`): `command` passes only those given;
#   - `prepare_key_value_message` does not check the output's name (a name holding a newline or `<<`
#     forges a second output): `output_record` refuses such a name first;
#   - `core.set_output` falls back to the `::set-output` command GitHub disabled when GITHUB_OUTPUT
#     is not set: outside Actions `Runner.set_outputs` writes nothing;
#   - `core.set_secret` masks the whole value only, and the runner masks line by line: `mask_values`
#     masks each line of a multi-line secret as well;
#   - inputs: `core.get_input("force-deploy")` reads only INPUT_FORCE-DEPLOY (a `/bin/sh` wrapper or
#     `docker run -e` passes INPUT_FORCE_DEPLOY), and `get_boolean_input` refuses yes/no/on/off/1/0
#     with a TypeError: the action shell reads both spellings and the settings table's booleans
#     (deploygate/shells/action.py `read_inputs`);
#   - the step summary (`core.summary` in @actions/core) is missing: `Runner.append_summary`.


def escape_data(value: str) -> str:
    """Escape a workflow command's message (the part after `::`), as @actions/core does."""
    return str(toolkit_command.escape_data(value))


def escape_property(value: str) -> str:
    """Escape a workflow command's property value (`title=...`): also `:` and `,`."""
    return str(toolkit_command.escape_property(value))


def command(name: str, message: str = "", **properties: str) -> str:
    """One workflow command line, e.g. `::error title=deploygate::message` (no trailing newline);
    properties that are empty are left out."""
    return str(toolkit_command.Command(name, {k: v for k, v in properties.items() if v}, message))


def inert(text: str) -> str:
    """A log line that the runner cannot read as a workflow command: one line (a newline in user
    data would start a new line, e.g. `\n::error::...`), and no leading `::`."""
    one_line = re.sub(r"\r\n|\r|\n", " \u23ce ", text)
    return "\u203a " + one_line if one_line.lstrip().startswith("::") else one_line


class InertFormatter(RedactingFormatter):
    """A logging formatter whose every record is one redacted `inert` line (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))


def output_record(name: str, value: str) -> str:
    """One `name<<DELIMITER` record for GITHUB_OUTPUT (the toolkit's: a random delimiter, refused if
    the value holds it); a name that would break the file is refused first."""
    if not name or any(c in name for c in "\r\n=<") or name != name.strip():
        raise ValueError(f"output name {name!r} cannot be written to GITHUB_OUTPUT")
    return str(prepare_key_value_message(name, value)) + "\n"


def fit_utf8(text: str, limit: int, suffix: str = _TRUNCATED) -> str:
    """`text` if its UTF-8 form fits in `limit` bytes, else cut at a character boundary + `suffix`."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    room = max(0, limit - len(suffix.encode("utf-8")))
    return raw[:room].decode("utf-8", errors="ignore") + suffix


def mask_values(secret: str) -> list[str]:
    """What to `::add-mask::` for one secret: the whole value and each of its lines (the runner masks per line)."""
    values = [secret.strip()] if secret.strip() else []
    if "\n" in secret or "\r" in secret:
        values += [line.strip() for line in re.split(r"\r?\n|\r", secret) if line.strip()]
    return list(dict.fromkeys(values))


# --- the runner ---------------------------------------------------------------------------------


class Runner:
    """Workflow commands on `stream` and the file commands the runner's env points at.

    Outside Actions (no GITHUB_OUTPUT etc.) the file commands are skipped and the workflow commands
    are still printed, which is harmless in a terminal.
    """

    def __init__(self, env: Mapping[str, str], stream: TextIO) -> None:
        self.stream = stream
        self.output_path = _path(env.get("GITHUB_OUTPUT"))
        self.summary_path = _path(env.get("GITHUB_STEP_SUMMARY"))
        self.masked: set[str] = set()

    def emit(self, line: str) -> None:
        self._write(redact(line))

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def add_mask(self, secret: str) -> None:
        for value in mask_values(secret):
            if value not in self.masked:
                self.masked.add(value)
                self._write(command("add-mask", value))  # the one line that must hold the secret

    def annotate(
        self, level: Literal["error", "warning", "notice"], message: str, title: str = "deploygate"
    ) -> None:
        self.emit(command(level, message, title=title))

    def error(self, message: str, title: str = "deploygate") -> None:
        self.annotate("error", message, title)

    def warning(self, message: str, title: str = "deploygate") -> None:
        self.annotate("warning", message, title)

    def notice(self, message: str, title: str = "deploygate") -> None:
        self.annotate("notice", message, title)

    def debug(self, message: str) -> None:
        self.emit(command("debug", message))

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A collapsible log section. Commands inside still work (unlike `quiet`)."""
        self.emit(command("group", title))
        try:
            yield
        finally:
            self.emit("::endgroup::")

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Stop the runner from interpreting workflow commands in what is printed inside (logs of
        third-party code may echo user data that looks like `::set-output`). Masks still apply."""
        token = secrets.token_hex(16)
        self.emit(f"::stop-commands::{token}")
        try:
            yield
        finally:
            self.emit(f"::{token}::")

    def set_outputs(self, outputs: Mapping[str, str]) -> None:
        if self.output_path is None:
            return
        text = "".join(output_record(name, redact(value)) for name, value in outputs.items())
        with self.output_path.open("a", encoding="utf-8", newline="\n") as f:
            f.write(text)

    def append_summary(self, markdown: str) -> None:
        """Append to the step summary, never letting the file pass the runner's limit."""
        if self.summary_path is None:
            return
        try:
            used = self.summary_path.stat().st_size
        except OSError:
            used = 0
        room = SUMMARY_BUDGET_BYTES - used
        if room <= len(_TRUNCATED.encode("utf-8")):
            log.warning("step summary is full (%d bytes); not adding the deploygate report", used)
            return
        markdown = redact(markdown)
        body = fit_utf8(markdown if markdown.endswith("\n") else markdown + "\n", room)
        with self.summary_path.open("a", encoding="utf-8", newline="\n") as f:
            f.write(body)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


# --- the PR comment REST client -----------------------------------------------------------------


@dataclass(frozen=True)
class CommentOutcome:
    """What became of the sticky comment. `forbidden` is a read-only token or a fork: warn, don't fail."""

    status: Literal["created", "updated", "forbidden"]
    url: str | None = None
    detail: str = ""


class PullRequestComments:
    """The three issue-comment endpoints, at `api_url` (GITHUB_API_URL, so GHES works)."""

    def __init__(self, api_url: str, token: str, repository: str, *, timeout: float = 30.0) -> None:
        if repository.count("/") != 1:
            raise GitHubError(f"GITHUB_REPOSITORY {repository!r} is not owner/name")
        self.api_url = api_url.rstrip("/")
        self.token = token
        remember(token)
        self.repo_path = "/".join(urllib.parse.quote(part, safe="") for part in repository.split("/"))
        self.timeout = timeout

    def upsert(self, pr_number: int, body: str, marker: str = COMMENT_MARKER) -> CommentOutcome:
        """Update the comment that starts with `marker`, else create one. Never two."""
        body = redact(body)
        if not body.startswith(marker):
            body = f"{marker}\n{body}"
        body = fit_utf8(body, COMMENT_LIMIT_CHARS)  # bytes >= characters, so this also fits the char limit
        try:
            existing = self._find(pr_number, marker)
            if existing is not None:
                data = self._request(
                    "PATCH", f"/repos/{self.repo_path}/issues/comments/{existing}", {"body": body}
                )
                return CommentOutcome("updated", _str(data.get("html_url")))
            data = self._request(
                "POST", f"/repos/{self.repo_path}/issues/{pr_number}/comments", {"body": body}
            )
            return CommentOutcome("created", _str(data.get("html_url")))
        except _Forbidden as exc:
            return CommentOutcome("forbidden", detail=str(exc))

    def _find(self, pr_number: int, marker: str) -> int | None:
        url: str | None = f"{self.api_url}/repos/{self.repo_path}/issues/{pr_number}/comments?per_page=100"
        pages = 0
        while url and pages < 100:  # 10 000 comments: a bound, not a limit anyone reaches
            pages += 1
            comments, url = self._get_page(url)
            for comment in comments:
                if isinstance(comment, dict) and str(comment.get("body") or "").lstrip().startswith(marker):
                    return int(comment["id"])
        return None

    def _get_page(self, url: str) -> tuple[list[Any], str | None]:
        data, headers = self._send("GET", url, None)
        if not isinstance(data, list):
            raise GitHubError(f"GitHub API: listing comments returned {type(data).__name__}, not a list")
        return data, _next_link(headers.get("Link", ""))

    def _request(self, method: str, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        data, _ = self._send(method, self.api_url + path, payload)
        return data if isinstance(data, dict) else {}

    def _send(
        self, method: str, url: str, payload: Mapping[str, Any] | None
    ) -> tuple[Any, Mapping[str, str]]:
        request = urllib.request.Request(
            url,
            method=method,
            data=None if payload is None else json.dumps(payload).encode("utf-8"),
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "deploygate",
                **({"Content-Type": "application/json"} if payload is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                headers = {k: v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code in (401, 403, 404):
                raise _Forbidden(f"{method} {_route(url)}: HTTP {exc.code} {message}".strip()) from None
            raise GitHubError(
                f"GitHub API {method} {_route(url)} failed: HTTP {exc.code} {message}".strip()
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GitHubError(f"GitHub API at {self.api_url} is unreachable: {reason}") from None
        try:
            return (json.loads(raw) if raw else {}), headers
        except ValueError:
            raise GitHubError(
                f"GitHub API {method} {_route(url)} answered with something that is not JSON"
            ) from None


class _Forbidden(Exception):
    """401/403/404: the token may not see or write the PR (fork, read-only token, missing permission)."""


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _route(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _next_link(header: str) -> str | None:
    """The `rel="next"` URL of a Link header, if any."""
    for part in header.split(","):
        match = re.match(r"\s*<([^>]+)>\s*;(.*)", part)
        if match and re.search(r'rel="?next"?', match.group(2)):
            return match.group(1)
    return None
