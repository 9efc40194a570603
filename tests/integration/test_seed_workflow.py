"""Findings 3 and 6 of issue 9, and the location file's tracking_uri: the seed's own dvc.yaml
deployment command line, with `deploygate` in place of scripts/deployment_script.py, on the seed's
params.yaml and files, read back by the seed workflow's summary step (its jq lines, run by bash;
the same reads in Python where jq is not installed); MLFLOW_EXPERIMENT_NAME; a run on another server."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.gatekit import SEED_METRICS, run_gate, write_json
from tests.hub_server import HubServer, iter_repo_files
from tests.seedworld import SEED_EVAL, eval_with_score, log_seed_training_run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*type hint is inferred:UserWarning")]

# The deployment stage of the seed's dvc.yaml, verbatim (docs/model-deployment-pipeline.md of the seed).
SEED_STAGE = """
deployment:
  cmd: >-
    python scripts/deployment_script.py
    --evaluation-results results/evaluations/metrics.json
    --model-artifact-path results/fine_tuned_model_location.json
    --config params.yaml
    --output-dir results/deployment
    --min-improvement-threshold 0.001
    --hf-model-id ShenghaoYummy/TinyLlama-ECommerce-Chatbot
"""

# The seed's params.yaml (its training sections abridged) with the deployment section its document shows.
SEED_PARAMS = """
model:
  base_model: "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
lora:
  r: 16
  alpha: 32
training:
  epochs: 2
evaluation:
  use_dagshub: true
  metrics: ["bleu", "rouge"]
mlflow:
  tracking_uri: "https://dagshub.com/ShenghaoisYummy/E-commerce-Chatbot.mlflow"
  experiment_name: "ecommerce-chatbot-evaluation"
deployment:
  min_improvement_threshold: 0.001
  model_registry_name: "REGISTRY"
  huggingface:
    model_id: "ShenghaoYummy/TinyLlama-ECommerce-Chatbot"
    push_to_hub: true
    create_model_card: true
  weighted_scoring:
    weights:
      bleu1: 0.10
      bleu2: 0.15
      bleu3: 0.25
      bleu4: 0.40
      rougeL_precision: 0.10
"""

# The seed workflow's "Create pipeline summary" step, its deployment part, verbatim.
SUMMARY_STEP = r"""
if [ -f "results/deployment/deployment_info.json" ]; then
  echo "### 🚀 Deployment Results:" >> $GITHUB_STEP_SUMMARY
  SHOULD_DEPLOY=$(cat results/deployment/deployment_info.json | jq -r '.should_deploy' 2>/dev/null || echo 'unknown')
  MLFLOW_REGISTERED=$(cat results/deployment/deployment_info.json | jq -r '.mlflow_registered' 2>/dev/null || echo 'false')
  HF_DEPLOYED=$(cat results/deployment/deployment_info.json | jq -r '.huggingface_deployed' 2>/dev/null || echo 'false')

  echo "- **Deployment Decision:** $SHOULD_DEPLOY" >> $GITHUB_STEP_SUMMARY
  echo "- **MLflow Registered:** $MLFLOW_REGISTERED" >> $GITHUB_STEP_SUMMARY
  echo "- **Hugging Face Deployed:** $HF_DEPLOYED" >> $GITHUB_STEP_SUMMARY
fi
"""


def summary_lines(project: Path) -> list[str]:
    """The three lines the seed's summary step writes: by bash + jq when jq is installed, else the
    same reads in Python (jq -r prints JSON true/false/null as true/false/null)."""
    if shutil.which("jq"):
        out = project / "summary.md"
        out.write_text("")
        res = subprocess.run(
            ["bash", "-c", SUMMARY_STEP],
            cwd=project,
            env={**os.environ, "GITHUB_STEP_SUMMARY": str(out)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return out.read_text().splitlines()[1:]
    info = json.loads((project / "results" / "deployment" / "deployment_info.json").read_text())
    shown = {True: "true", False: "false", None: "null"}
    return [
        f"- **{label}:** {shown.get(info.get(key), info.get(key))}"
        for label, key in (
            ("Deployment Decision", "should_deploy"),
            ("MLflow Registered", "mlflow_registered"),
            ("Hugging Face Deployed", "huggingface_deployed"),
        )
    ]


@pytest.fixture
def seed_hub():
    """The Hub as the seed's repo owner sees it (its namespace), a local server."""
    with HubServer(user="ShenghaoYummy") as server:
        from huggingface_hub import constants

        constants.HF_HUB_DISABLE_XET = True
        yield server


def test_the_seed_command_line_and_summary_step(tmp_path, mlflow_server, seed_hub, registry_name):
    project = tmp_path / "E-commerce-Chatbot"
    (project / "results" / "evaluations").mkdir(parents=True)
    (project / "params.yaml").write_text(SEED_PARAMS.replace("REGISTRY", registry_name))
    (project / "results" / "evaluations" / "metrics.json").write_text(json.dumps(SEED_EVAL, indent=2))
    training = log_seed_training_run(
        mlflow_server.uri, f"ecommerce-{uuid.uuid4().hex[:8]}", tmp_path / "train"
    )
    (project / "results" / "fine_tuned_model_location.json").write_text(json.dumps(training.location))
    cmd = yaml.safe_load(SEED_STAGE)["deployment"]["cmd"]
    argv = shlex.split(
        cmd.replace("python scripts/deployment_script.py", str(Path(sys.executable).parent / "deploygate"))
    )
    experiment = f"ecommerce-chatbot-evaluation-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "HF_TOKEN": seed_hub.token,
        "HF_ENDPOINT": seed_hub.url,
        "GITHUB_SHA": "7" * 40,
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }

    first = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert summary_lines(project) == [
        "- **Deployment Decision:** true",
        "- **MLflow Registered:** true",
        "- **Hugging Face Deployed:** true",
    ]
    info = json.loads((project / "results" / "deployment" / "deployment_info.json").read_text())
    assert info["mlflow_model_version"] == "1" and info["min_improvement_threshold"] == 0.001
    assert info["force_deploy"] is False and info["deployment_run_id"] == info["mlflow"]["run_id"]
    assert info["mlflow"]["experiment"] == experiment  # MLFLOW_EXPERIMENT_NAME beats params.yaml
    comparison = json.loads((project / "results" / "deployment" / "model_comparison.json").read_text())
    assert comparison["is_best"] is True and comparison["historical_best_score"] is None
    assert comparison["improvement"] == 0.0 and comparison["improvement_percentage"] == 0.0
    assert comparison["current_score"] == round(comparison["current_score"], 12)  # no float noise
    assert comparison["current_contributions"]["bleu4"] == round(SEED_EVAL["bleu4"] * 0.4, 12)
    assert "config.json" in dict(iter_repo_files(seed_hub, "ShenghaoYummy/TinyLlama-ECommerce-Chatbot"))

    (project / "results" / "evaluations" / "metrics.json").write_text(json.dumps(eval_with_score(0.2)))
    env["GITHUB_SHA"] = "8" * 40
    second = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert summary_lines(project) == [
        "- **Deployment Decision:** false",
        "- **MLflow Registered:** false",
        "- **Hugging Face Deployed:** false",
    ]
    comparison = json.loads((project / "results" / "deployment" / "model_comparison.json").read_text())
    assert comparison["is_best"] is False and comparison["improvement"] < 0
    assert comparison["historical_best_score"] == info["weighted_score"]


def test_experiment_name_flag_beats_env_beats_params(
    tmp_path, capsys, mlflow_server, registry_name, monkeypatch
):
    params = tmp_path / "params.yaml"
    params.write_text("mlflow:\n  experiment_name: from-params\n")
    metrics = write_json(tmp_path / "metrics.json", SEED_METRICS)
    env_name, flag_name = f"env-{uuid.uuid4().hex[:6]}", f"flag-{uuid.uuid4().hex[:6]}"

    def experiment(*extra: str) -> str:
        out = tmp_path / uuid.uuid4().hex[:6]
        assert (
            main(
                [
                    "--evaluation-results",
                    str(metrics),
                    "--config",
                    str(params),
                    "--output-dir",
                    str(out),
                    "--mlflow-tracking-uri",
                    mlflow_server.uri,
                    "--registry-name",
                    registry_name,
                    "--dry-run",
                    *extra,
                ]
            )
            == 0
        ), capsys.readouterr().err
        return str(json.loads((out / "deployment_info.json").read_text())["mlflow"]["experiment"])

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", env_name)
    assert experiment() == env_name
    assert experiment("--experiment-name", flag_name) == flag_name
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert experiment() == "from-params"


def test_a_run_on_another_server_is_refused_saying_where_it_is(
    tmp_path, capsys, mlflow_server, registry_name, experiment_name
):
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.create_run(client.create_experiment(f"elsewhere-{uuid.uuid4().hex[:6]}"))
    local_store = f"sqlite:///{tmp_path / 'gate.db'}"
    res = run_gate(
        tmp_path,
        capsys,
        uri=local_store,
        registry=registry_name,
        experiment=experiment_name,
        metrics=SEED_METRICS,
        location={"mlflow_run_id": run.info.run_id, "tracking_uri": mlflow_server.uri},
    )
    assert res.code == 2
    errors = [line for line in res.err.splitlines() if "error" in line]
    assert len(errors) == 1 and f"is on {mlflow_server.uri} (the location file's tracking_uri)" in errors[0]
    assert f"MLFLOW_TRACKING_URI={mlflow_server.uri}" in errors[0]
    assert MlflowClient(tracking_uri=local_store).get_experiment_by_name(experiment_name) is None
