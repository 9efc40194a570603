"""A run that decides "skip" must not import torch, transformers or peft (they cost seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.gatekit import SEED_METRICS, local_model, write_json

pytestmark = pytest.mark.slow

PROBE = """
import sys
from deploygate.shells.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "peft", "safetensors") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


def test_skip_imports_no_ml_frameworks(tmp_path, mlflow_server, registry_name, experiment_name):
    metrics = write_json(tmp_path / "metrics.json", SEED_METRICS)
    loc = write_json(tmp_path / "loc.json", {"local_path": str(local_model(tmp_path / "model"))})
    common = [
        "--evaluation-results",
        str(metrics),
        "--model-artifact-path",
        str(loc),
        "--mlflow-tracking-uri",
        mlflow_server.uri,
        "--registry-name",
        registry_name,
        "--experiment-name",
        experiment_name,
        "--hf-model-id",
        "org/model",
    ]
    first = subprocess.run(
        [sys.executable, "-c", PROBE, *common, "--output-dir", str(tmp_path / "a"), "--skip-hf-push"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        [sys.executable, "-c", PROBE, *common, "--output-dir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert json.loads((tmp_path / "b" / "deployment_info.json").read_text())["decision"] == "skip"
    assert "HEAVY=\n" in second.stdout, second.stdout
