"""Rollback round trip against the real MLflow server and the local Hub server: alias, Hub files
and history all go back to the previous champion, and the next gate run compares against it."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from deploygate.adapters.mlflow_registry import MlflowRegistry
from deploygate.shells.cli import main
from tests.gatekit import metrics_scaled
from tests.hub_server import iter_repo_files
from tests.integration.test_ship import gate, seed_run  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]


def test_rollback_round_trip(
    gate,  # noqa: F811  (the fixture)
    hub_server,
    mlflow_server,
    registry_name,
    experiment_name,
    tmp_path,
    capsys,
    monkeypatch,
):
    assert gate("v1", "1").code == 0
    v1_files = dict(iter_repo_files(hub_server, gate.repo))
    second = gate("v2", "2", metrics=metrics_scaled(0.03), extra=["--no-merge"])  # different files on the Hub
    assert second.code == 0, second.err
    assert dict(iter_repo_files(hub_server, gate.repo)) != v1_files

    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    capsys.readouterr()
    code = main(
        [
            "rollback",
            "--registry-name",
            registry_name,
            "--experiment-name",
            experiment_name,
            "--mlflow-tracking-uri",
            mlflow_server.uri,
            "--hf-model-id",
            gate.repo,
            "--output-dir",
            str(tmp_path / "rb"),
            "--reason",
            "bad answers in prod",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "v2 -> v1" in out.out
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    assert client.get_model_version_by_alias(registry_name, "champion").version == "1"
    files_now = dict(iter_repo_files(hub_server, gate.repo))
    assert {k: v for k, v in files_now.items() if k != "README.md"} == {
        k: v for k, v in v1_files.items() if k != "README.md"
    }
    history = MlflowRegistry(mlflow_server.uri).history(registry_name)
    assert [h["version"] for h in history] == ["1", "2", "1"] and history[-1]["rollback_from"] == "2"
    exp = client.get_experiment_by_name(experiment_name)
    rb = client.search_runs([exp.experiment_id], "tags.`deploygate.mode` = 'rollback'", max_results=5)
    assert len(rb) == 1
    assert (rb[0].data.tags["deploygate.actor"], rb[0].data.tags["deploygate.reason"]) == (
        "octocat",
        "bad answers in prod",
    )
    assert json.loads((tmp_path / "rb" / "rollback_info.json").read_text())["to_version"] == "1"

    # the next gate run compares against the restored champion
    nxt = gate("v3", "3", metrics=metrics_scaled(0.01))
    assert nxt.comparison()["baseline"]["version"] == "1"

    # nothing earlier than v1: a second rollback from v3 goes to v1, one more has nowhere to go
    capsys.readouterr()
    again = main(
        [
            "rollback",
            "--registry-name",
            registry_name,
            "--experiment-name",
            experiment_name,
            "--mlflow-tracking-uri",
            mlflow_server.uri,
            "--skip-hf-push",
            "--output-dir",
            str(tmp_path / "rb2"),
        ]
    )
    assert again == 0 and client.get_model_version_by_alias(registry_name, "champion").version == "1"
    last = main(
        [
            "rollback",
            "--registry-name",
            registry_name,
            "--experiment-name",
            experiment_name,
            "--mlflow-tracking-uri",
            mlflow_server.uri,
            "--skip-hf-push",
            "--output-dir",
            str(tmp_path / "rb3"),
        ]
    )
    assert last == 2 and "no champion before v1" in capsys.readouterr().err
