"""A local sqlite store, as a newcomer uses it: the stdout summary names the tracking URI and where it
came from (a flag, MLFLOW_TRACKING_URI from .env), the run and the `mlflow ui` command, and the result
files link the run and the version there instead of null. Also: a first model has no "meets the
threshold", and only a run that replaced a champion names a previous version."""

from __future__ import annotations

import json
import os

import pytest
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.gatekit import local_model, metrics_scaled, run_gate, write_json

pytestmark = pytest.mark.slow


def test_local_store_summary_and_result_files(tmp_path, capsys, monkeypatch):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    ui = f"mlflow ui --backend-store-uri sqlite:///{db}"

    first = run_gate(tmp_path, capsys, uri=uri, registry="local-chat", experiment="local", name="first")
    assert first.code == 0, first.err
    info = first.info()
    run_id = info["mlflow"]["run_id"]
    experiment_id = MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    assert f"mlflow: {uri} (from --mlflow-tracking-uri)" in first.out
    assert f"mlflow run: {run_id}\n" in first.out
    assert f"browse it: {ui}" in first.out
    assert info["mlflow"]["ui_command"] == ui
    assert info["mlflow"]["run_url"] == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
    assert info["registry"]["url"] == "http://127.0.0.1:5000/#/models/local-chat/versions/1"
    assert info["registry"]["previous_version"] is None and info["rule"] == "first-model"
    assert first.comparison()["improvement_detail"]["meets_threshold"] is None  # nothing to improve on
    assert info["hub"] is None  # nothing built for the Hub

    worse = run_gate(
        tmp_path,
        capsys,
        uri=uri,
        registry="local-chat",
        experiment="local",
        name="worse",
        metrics=metrics_scaled(-0.01),
    )
    assert worse.code == 0 and worse.info()["decision"] == "skip"
    assert worse.info()["registry"]["previous_version"] is None  # nothing was replaced
    assert (
        worse.info()["registry"]["url"] is None
        and worse.comparison()["improvement_detail"]["meets_threshold"] is False
    )

    # the tracking URI from .env (no flag, nothing in the environment)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / ".env").write_text(f"MLFLOW_TRACKING_URI={uri}\n")
    folder = tmp_path / "better"
    metrics = write_json(folder / "metrics.json", metrics_scaled(0.01))
    location = write_json(
        folder / "location.json", {"local_path": str(local_model(folder / "model", "better"))}
    )
    capsys.readouterr()
    try:
        code = main(
            [
                "--evaluation-results",
                str(metrics),
                "--model-artifact-path",
                str(location),
                "--output-dir",
                str(folder / "out"),
                "--registry-name",
                "local-chat",
                "--experiment-name",
                "local",
                "--skip-hf-push",
            ]
        )
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"mlflow: {uri} (from MLFLOW_TRACKING_URI in .env)" in out
    better = json.loads((folder / "out" / "deployment_info.json").read_text())
    assert better["registry"]["version"] == "2" and better["registry"]["previous_version"] == "1"
    comparison = json.loads((folder / "out" / "model_comparison.json").read_text())
    assert comparison["improvement_detail"]["meets_threshold"] is True
