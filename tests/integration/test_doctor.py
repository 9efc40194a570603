"""`deploygate doctor` against a real server, a dead one, and a broken params.yaml."""

from __future__ import annotations

import pytest

from deploygate.cli import main
from tests.mlflow_fixtures import free_port

pytestmark = pytest.mark.slow


def test_doctor_ok(mlflow_server, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "from MLFLOW_TRACKING_URI" in out and "model registry answers" in out and "all checks passed" in out


def test_doctor_dead_server(capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["doctor", "--mlflow-tracking-uri", uri]) == 1
    out = capsys.readouterr().out
    assert f"FAIL MLflow server at {uri} is unreachable" in out


def test_doctor_dagshub_credentials_are_used(mlflow_server, capsys, monkeypatch):
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)  # doctor fills these in os.environ; undo it afterwards
    monkeypatch.setenv("DAGSHUB_USERNAME", "someone")
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "sentinel-dagshub-token")
    assert main(["doctor", "--mlflow-tracking-uri", mlflow_server.uri]) == 0
    out = capsys.readouterr().out
    assert "user someone" in out and "sentinel-dagshub-token" not in out


def test_doctor_bad_params(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("mlflow: [1, 2\n")
    assert main(["doctor", "--config", str(bad), "--mlflow-tracking-uri", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "not valid YAML" in capsys.readouterr().out
