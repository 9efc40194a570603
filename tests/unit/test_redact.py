"""The scrubber every error text passes through: URL credentials and remembered secrets out."""

from __future__ import annotations

import logging

import pytest

from deploygate.core.errors import DeployGateError, RegistryError, shown
from deploygate.core.redact import REDACTED, RedactingFormatter, redact, remember, secrets_in


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "API request to https://user:pw123@host/api/2.0 failed",
            "API request to https://***@host/api/2.0 failed",
        ),
        ("http://gate:p@ss@127.0.0.1:5000/x", "http://***@127.0.0.1:5000/x"),  # a raw @ in the password
        ("'postgresql+psycopg2://u:s3cret@db:5432/mlflow'", "'postgresql+psycopg2://***@db:5432/mlflow'"),
        (
            "HTTPSConnectionPool(host='h'): Max retries exceeded with url: /api?x=a@b",
            None,
        ),  # no user info: unchanged
        ("see https://host/path@v2 and mailto:a@b", None),
        ("two: http://a:b@h1/ and https://c:d@h2", "two: http://***@h1/ and https://***@h2"),
    ],
)
def test_url_credentials_are_removed(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_remembered_secrets_are_removed_in_every_form() -> None:
    secret = "s3cr3t/with+chars=="
    remember(secret, "", None, "abc")  # empty, None and too-short values are ignored
    assert redact(f"token {secret} again {secret}") == f"token {REDACTED} again {REDACTED}"
    assert redact("password=s3cr3t%2Fwith%2Bchars%3D%3D") == f"password={REDACTED}"
    assert redact("abc stays") == "abc stays"


def test_secrets_of_an_environment() -> None:
    env = {
        "HF_TOKEN": "hf_x1",
        "OTHER": "visible",
        "MLFLOW_TRACKING_URI": "https://me:pa%40ss@h",
        "EMPTY": " ",
    }
    assert set(secrets_in(env, ["HF_TOKEN", "EMPTY", "MISSING"], ["MLFLOW_TRACKING_URI"])) == {
        "hf_x1",
        "pa@ss",
    }


def test_every_deploygate_error_and_log_record_is_redacted() -> None:
    remember("registry-password-9f3")
    exc = RegistryError(
        "MLflow: failed at http://u:registry-password-9f3@h/x", hint="retry registry-password-9f3"
    )
    assert "registry-password-9f3" not in str(exc) and "u:" not in exc.message
    record = logging.LogRecord(
        "deploygate", logging.ERROR, __file__, 1, "failed: %s", ("registry-password-9f3",), None
    )
    assert "registry-password-9f3" not in RedactingFormatter("%(message)s").format(record)


def test_messages_stay_one_bounded_line_and_values_are_cut() -> None:
    exc = DeployGateError("key 'a\nb' " + "x" * 5000 + " fix: do this")
    assert "\n" not in exc.message and len(exc.message) <= 1000 and exc.message.endswith("fix: do this")
    assert len(shown("y" * 10_000_000)) <= 80
    assert shown(10**5000).startswith("<an integer of about 5001 digits")
    loop: list[object] = []
    loop.append(loop)
    assert len(shown(loop)) <= 80 and len(shown({"a": [[[[[[1]]]]]]})) <= 80
