"""Every error deploygate raises on purpose, grouped by who has to act, each with its exit code.

Each type is also a builtin (ValueError, RuntimeError, ...) so generic handlers still catch it.
A message is one line: what failed, the value (echoed with `shown`, at most 80 characters), and
the fix; every message is redacted (no credentials, no secret values) and bounded in length. The
shells print it and exit with `exit_code`; only unexpected exceptions get a traceback (and only
with -v / RUNNER_DEBUG).
"""

from __future__ import annotations

import reprlib

from deploygate.core.redact import redact

EXIT_OK = 0
EXIT_FAILURE = 1  # something outside the user's input failed (server down, push refused, ...)
EXIT_BAD_INPUT = 2  # the input or configuration is wrong: nothing was written anywhere
EXIT_REJECTED = 3  # the gate decided not to deploy and `fail-on-reject` asked for a red step

SHOWN_LIMIT = 80  # an echoed value is cut to this many characters
MESSAGE_LIMIT = 1000  # and a whole message to this many (its start and its fix are kept)


class _Brief(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # repr() of a 5,000-digit int raises ValueError (int-string limit)
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """A value as a message echoes it: its repr, cut to `limit` characters. The repr itself is
    bounded (reprlib), so a 300 MB string or a deeply shared YAML structure costs nothing to show."""
    brief = _Brief()
    brief.maxlevel, brief.maxstring, brief.maxother, brief.maxlong = 3, limit, limit, limit
    brief.maxdict = brief.maxlist = brief.maxtuple = brief.maxset = brief.maxfrozenset = 8
    text = brief.repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def _bounded(text: str) -> str:
    """A message on one line (a key with a newline in it cannot start a second one) and within
    MESSAGE_LIMIT characters: the head and the tail (where the fix is) kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " \u23ce ")
    if len(text) <= MESSAGE_LIMIT:
        return text
    head, tail = MESSAGE_LIMIT * 2 // 3, MESSAGE_LIMIT // 4
    return f"{text[:head]} ... ({len(text) - head - tail} characters cut) ... {text[-tail:]}"


class DeployGateError(Exception):
    """Base of all deploygate errors. `exit_code` is what the shells exit with."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # SDK texts end up in messages: no credentials or secret values, and no runaway length
        self.message = message = _bounded(redact(message))
        self.hint = hint = _bounded(redact(hint)) if hint else hint
        super().__init__(f"{message} {hint}".strip() if hint else message)


# --- the user's input: exit 2, nothing written ---------------------------------------------------


class InputError(DeployGateError, ValueError):
    """An input file, flag, action input or params.yaml value is wrong. Raised before any write."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A setting (flag, action input, params.yaml, environment) has a bad value."""


class MetricsError(InputError):
    """The evaluation results are missing, malformed, or out of range."""


class ModelSourceError(InputError):
    """The model location names no usable source (run id, model URI or local directory)."""


class AdapterError(InputError):
    """The LoRA adapter cannot be merged as configured (and no fallback was allowed)."""


class IncomparableError(InputError):
    """Candidate and champion were scored differently; comparing them would be meaningless."""


# --- the outside world: exit 1 ---------------------------------------------------------------------


class ExternalError(DeployGateError, RuntimeError):
    """An outside system (MLflow, the Hub, GitHub) failed or refused."""

    exit_code = EXIT_FAILURE


class RegistryError(ExternalError):
    """The MLflow tracking server or model registry failed, refused or is unreachable."""


class HubError(ExternalError):
    """The Hugging Face Hub failed or refused."""


class GitHubError(ExternalError):
    """The GitHub REST API failed or refused (PR comments)."""


class SigningError(ExternalError):
    """Signing the Hub folder failed (Sigstore unreachable or refusing, the OIDC token refused)."""


class SignatureInvalid(DeployGateError, ValueError):
    """A signature that does not verify: another key or identity, a changed envelope, not a bundle."""

    exit_code = EXIT_FAILURE


class ResourceError(DeployGateError, RuntimeError):
    """This machine lacks the disk or memory a deploy needs (checked before any download)."""


class MergeError(DeployGateError, RuntimeError):
    """The LoRA merge failed for a reason that is not the user's input (disk, corrupt file, ...)."""


def first_line(exc: BaseException, limit: int | None = None, *, default: str | None = None) -> str:
    """An exception as one line of text: the first line of its message (stripped), or `default`
    (its type's name when not given) when it has none; cut to `limit` characters. The one helper for
    every "what failed" a message or log line quotes from someone else's exception."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else (type(exc).__name__ if default is None else default)
    return line[:limit] if limit is not None else line
