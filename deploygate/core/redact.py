"""One scrubber for every text deploygate stores or shows: URL credentials and known secrets out.

SDK error texts carry what they were given: MLflow names the request URL with its `user:password@`,
requests and huggingface_hub echo URLs and headers. Every such text passes through `redact` before
it reaches a person or a store: each DeployGateError redacts its own message, the log formatters of
the shells and of `deployment_logs.txt` redact every record, and the shells' error funnels, the
runner's outputs / summary / annotations, the PR comment and the failure path's tag and files
redact what they write. The shells `remember` the secret values they know (environment, action
inputs, a password in the tracking URI) once, at start; this module never reads the environment.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping

REDACTED = "***"
# Shorter values are not treated as secrets: replacing every "abc" in a log would garble it, and a
# password that short inside a URL is removed with the rest of the user info anyway.
MIN_SECRET_LENGTH = 4
# scheme://user:password@host — everything between `://` and the last `@` before the host (a
# password with a raw `@` in it included), up to a path, query, fragment, space or quote.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)(?:[^\s/?#@'\"<>`]*@)+")

_lock = threading.Lock()
_known: tuple[str, ...] = ()  # longest first, so a secret containing another is replaced whole


def _variants(secret: str) -> set[str]:
    """The forms a secret takes in text: as given, each of its lines, URL-quoted and unquoted."""
    values = {secret, secret.strip(), *(line.strip() for line in secret.splitlines())}
    for value in list(values):
        values.add(urllib.parse.quote(value, safe=""))
        values.add(urllib.parse.quote_plus(value, safe=""))
        values.add(urllib.parse.unquote(value))
    return {v for v in values if len(v) >= MIN_SECRET_LENGTH}


def remember(*secrets: str | None) -> None:
    """Add secret values that must never appear in anything deploygate writes or prints."""
    global _known
    new = set().union(*(_variants(s) for s in secrets if s))
    if not new:
        return
    with _lock:
        _known = tuple(sorted(set(_known) | new, key=len, reverse=True))


def url_password(url: str) -> str | None:
    """The password inside `scheme://user:password@host`, unquoted; None when there is none."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        return urllib.parse.unquote(parts.password) if parts.password else None
    except ValueError:
        return None


def secrets_in(env: Mapping[str, str], names: Iterable[str], url_names: Iterable[str] = ()) -> list[str]:
    """The secret values of an environment, longest first (then alphabetical): the variables `names`, and the
    passwords inside the URLs of `url_names`."""
    values = {env[k] for k in names if env.get(k, "").strip()}
    values |= {p for k in url_names if (p := url_password(env.get(k, "")))}
    return sorted(values, key=lambda v: (-len(v), v))  # longest first; ties in a fixed order


def redact(text: str) -> str:
    """`text` without URL credentials and without any remembered secret value."""
    if not text:
        return text
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every record (message, arguments, traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of the process when it is made, whoever logs it and whichever handler
    prints it: the SDKs bring their own stderr handlers (mlflow, huggingface_hub) and warnings reach
    stderr through logging's last-resort handler. Only records a logger lets through are made, so
    debug noise costs nothing. Idempotent; the shells call it once."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as it would
            return record
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
