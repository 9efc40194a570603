"""`dvc repro` runs the example deployment stage for real, in a fresh git repo, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.gatekit import SEED_METRICS, local_model

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dvc"


def test_dvc_repro_deployment_stage(tmp_path, mlflow_server, registry_name):
    repo = tmp_path / "project"
    repo.mkdir()
    shutil.copy(EXAMPLES / "dvc.yaml", repo / "dvc.yaml")
    params = (EXAMPLES / "params.yaml").read_text().replace("ecommerce-chatbot\n", f"{registry_name}\n", 1)
    (repo / "params.yaml").write_text(params)
    (repo / "results" / "evaluations").mkdir(parents=True)
    (repo / "results" / "evaluations" / "metrics.json").write_text(json.dumps(SEED_METRICS))
    local_model(repo / "model")
    (repo / "results" / "fine_tuned_model_location.json").write_text(json.dumps({"local_path": "../model"}))
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "DVC_NO_ANALYTICS": "1",
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "GITHUB_SHA": "f" * 40,
    }

    def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
        [str(Path(bindir) / "dvc"), "init", "-q"],
    ):
        assert sh(*cmd).returncode == 0
    res = sh(str(Path(bindir) / "dvc"), "repro", "deployment")
    assert res.returncode == 0, res.stdout + res.stderr
    info = json.loads((repo / "results" / "deployment" / "deployment_info.json").read_text())
    assert info["deployed"] and info["registry"]["name"] == registry_name
    assert (repo / "dvc.lock").exists()
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    assert client.get_model_version_by_alias(registry_name, "champion").version == "1"
    # nothing changed: dvc does not run the stage again
    again = sh(str(Path(bindir) / "dvc"), "repro", "deployment")
    assert again.returncode == 0 and "didn't change" in (again.stdout + again.stderr)
