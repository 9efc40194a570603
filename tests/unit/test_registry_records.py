"""The registry adapter's pure parts: what MLflow stores (limits), how each database words a
concurrent insert, how filter values are quoted, how history entries are keyed."""

from __future__ import annotations

import json

import pytest

from deploygate.adapters.mlflow_registry import (
    Limits,
    check_fits,
    clip,
    history_key,
    history_value,
    is_insert_conflict,
    version_filter,
)
from deploygate.core.errors import ConfigError, RegistryError
from deploygate.core.model import REASON_MAX, RunContext
from deploygate.core.records import HISTORY_KEEP, TAG_HISTORY

# The first line of each server's answer to two runs creating the same alias at once (real texts,
# from MLflow's BAD_REQUEST around sqlalchemy's IntegrityError), and errors that are no conflict.
CONFLICTS = [
    (
        "sqlite",
        "BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases.name",
    ),
    (
        "postgresql",
        "BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"registered_model_alias_pk"',
    ),
    (
        "mysql",
        "BAD_REQUEST: (pymysql.err.IntegrityError) (1062, \"Duplicate entry 'm-champion' for key "
        "'registered_model_aliases.PRIMARY'\")",
    ),
    ("sqlite busy", "BAD_REQUEST: (sqlite3.OperationalError) database is locked"),
]
NOT_CONFLICTS = [
    "BAD_REQUEST: (psycopg2.errors.StringDataRightTruncation) value too long for type character varying(5000)",
    "API request to endpoint /api/2.0/mlflow/registered-models/alias failed with error code 503 != 200",
    "RESOURCE_DOES_NOT_EXIST: Registered Model with name=m not found",
]


@pytest.mark.parametrize(("db", "text"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_every_databases_insert_conflict_is_recognised(db: str, text: str) -> None:
    try:
        try:
            raise RuntimeError(text)
        except RuntimeError as exc:
            raise RegistryError("MLflow: promoting 'm' v2 failed") from exc
    except RegistryError as wrapped:
        assert is_insert_conflict(wrapped)


@pytest.mark.parametrize("text", NOT_CONFLICTS)
def test_other_errors_are_not_conflicts(text: str) -> None:
    assert not is_insert_conflict(RuntimeError(text))


def test_limits_come_from_the_installed_mlflow_capped_by_the_sql_columns() -> None:
    from mlflow.utils import validation

    limits = Limits.of_installed_mlflow()
    assert (
        limits.model_tag == 5000 < validation.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
    )  # validation allows more than the column
    assert limits.run_tag == min(validation.MAX_TAG_VAL_LENGTH, 5000)
    assert limits.param == validation.MAX_PARAM_VAL_LENGTH
    assert limits.key == validation.MAX_ENTITY_KEY_LENGTH


def test_values_over_the_limit_are_refused_or_cut_on_purpose() -> None:
    check_fits("version tag", "k", "x" * 5000, 5000)
    with pytest.raises(ConfigError, match="5,001 characters; MLflow keeps at most 5,000"):
        check_fits("version tag", "k", "x" * 5001, 5000)
    with pytest.raises(ConfigError, match="key"):
        check_fits("run tag", "k" * 251, "", 5000)
    cut = clip("y" * 9000, 5000)
    assert len(cut) == 5000 and cut.endswith(" [... cut to fit MLflow: 9,000 characters in all]")
    assert clip("short", 5000) == "short"


NAMES = [
    "plain",
    "it's",
    'say "hi"',
    "ünïcødé 模型",
    "two  spaces ",
    "100%_x",
    "both ' and \"",
    "back\\slash\\",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_filter_is_built_only_when_mlflow_reads_the_name_back_exactly(name: str) -> None:
    from mlflow.utils.search_utils import SearchModelVersionUtils

    query = version_filter([("attribute", "name", name), ("tag", "deploygate.candidate_key", "ab12")])
    if query is None:  # then find_version searches by the key and compares names itself
        assert ("'" in name and '"' in name) or "\\" in name
        return
    parsed = SearchModelVersionUtils.parse_search_filter(query)
    assert [p["value"] for p in parsed] == [name, "ab12"]


def test_history_entries_sort_by_time_fit_a_tag_and_are_unique_per_run() -> None:
    early = {"version": "2", "at": "2026-11-26T10:00:00.000001+00:00", "run_id": "b" * 32}
    later = {"version": "1", "at": "2026-11-26T11:00:00+01:00", "run_id": "a" * 32}  # 10:00:00 UTC, earlier
    assert history_key(later) < history_key(early)
    assert history_key(early).startswith(TAG_HISTORY + ".20261126T100000.000001Z.")
    assert history_key({"at": "not a time"}) != history_key({"at": "not a time"})  # no run id: still unique
    assert len(history_key(early)) <= 250 and json.loads(history_value(early)) == early
    assert HISTORY_KEEP >= 30  # at least what the previous release kept


def test_a_reason_longer_than_what_is_recorded_is_an_input_error() -> None:
    RunContext(reason="x" * REASON_MAX)
    with pytest.raises(ConfigError, match=r"^reason: 1,001 characters"):
        RunContext(reason="x" * (REASON_MAX + 1))


def test_names_longer_than_mlflow_keeps_are_input_errors() -> None:
    limits = Limits.of_installed_mlflow()
    limits.check_names(registry_name="m" * 256, alias="a" * 255)
    with pytest.raises(ConfigError, match=r"^registry-name: 257 characters"):
        limits.check_names(registry_name="m" * 257, alias="champion")
    with pytest.raises(ConfigError, match=r"^champion-alias: 256 characters"):
        limits.check_names(registry_name="m", alias="a" * 256)


@pytest.mark.parametrize("given", [None, "false"])
def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on(given: str | None) -> None:
    """Offline, MLflow's telemetry thread deletes a variable from os.environ while a request may be
    iterating it (a KeyError that fails the run): the shells' start-up (`quiet_third_party_logs`, before
    the registry adapter imports mlflow) turns telemetry off, so there is no client and no such
    thread, unless MLFLOW_DISABLE_TELEMETRY is set by the user, whose choice stands. Checked in a
    fresh interpreter."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    if given is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = given
    code = (
        "from deploygate.bootstrap import quiet_third_party_logs\n"
        "quiet_third_party_logs()\n"
        "import mlflow, os\n"
        "from mlflow.telemetry.client import get_telemetry_client\n"
        "print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'), get_telemetry_client() is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if given is None:
        assert out.stdout.split() == ["true", "True"]
    else:
        assert out.stdout.split()[0] == given
