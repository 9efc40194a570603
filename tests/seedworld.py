"""The world the seed's users bring, built with the real libraries: training runs logged the way the
E-commerce-Chatbot's fine_tuning_script logs them (under the installed MLflow 3, and in the MLflow 2
layout), its location file, and a registry its deployment_script left behind (Production stage,
its own version tags, no alias). Nothing is downloaded: the models are tiny random ones built here.
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from tests.modelfactory import make_tiny_llama

# The seed's evaluation writes these (src/evaluation.py: bleu1..4 + rouge1/2/L precision/recall/f).
SEED_EVAL = {
    "bleu1": 0.3713,
    "bleu2": 0.2622,
    "bleu3": 0.2035,
    "bleu4": 0.1603,
    "rouge1_precision": 0.61,
    "rouge1_recall": 0.55,
    "rouge1_fmeasure": 0.57,
    "rouge2_precision": 0.41,
    "rouge2_recall": 0.37,
    "rouge2_fmeasure": 0.39,
    "rougeL_precision": 0.6641,
    "rougeL_recall": 0.52,
    "rougeL_fmeasure": 0.58,
}
SEED_WEIGHTS = {"bleu1": 0.10, "bleu2": 0.15, "bleu3": 0.25, "bleu4": 0.40, "rougeL_precision": 0.10}


def seed_score(metrics: dict[str, float]) -> float:
    return sum(metrics[k] * w for k, w in SEED_WEIGHTS.items())


def eval_with_score(score: float) -> dict[str, float]:
    """Seed-style evaluation results whose default weighted score is `score` (every weighted metric shifted)."""
    shift = score - seed_score(SEED_EVAL)
    return {k: (v + shift if k in SEED_WEIGHTS else v) for k, v in SEED_EVAL.items()}


def peft_model(base: Path, seed: int = 0) -> Any:
    """A real peft LoRA model over the tiny base, in memory (as the seed's trainer holds it), with
    non-zero lora_B so that a merge changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "v_proj", "k_proj", "o_proj"],
    )
    pm = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in pm.named_parameters():
            if "lora_" in name:
                param.copy_((torch.randn(param.shape, generator=gen) * 0.05).to(param.dtype))
    return pm


@dataclass
class TrainingRun:
    run_id: str
    model_id: str | None  # the LoggedModel (MLflow 3); None in the MLflow 2 layout
    location: dict[str, Any]  # results/fine_tuned_model_location.json as the seed writes it
    base: Path


def _seed_location(run_id: str, uri: str, base: Path) -> dict[str, Any]:
    return {
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "dvc_stage": "fine_tuning",
        "timestamp": "20260101_120000",
        "model_name": str(base),
        "fine_tuned": True,
    }


def log_seed_training_run(uri: str, experiment: str, work: Path, *, with_model: bool = True) -> TrainingRun:
    """utils/mlflow_utils.log_transformers_model under the installed MLflow: log_model of the peft
    model + tokenizer with artifact_path="model", the tokenizer again under `tokenizer/`, and
    model_info.json. MLflow 3 stores the model as a LoggedModel; the run's own `model/` stays empty.

    pip_requirements is given only because MLflow's default requirements import torchvision, which
    this machine does not have; it changes nothing in where the files go."""
    import mlflow
    from transformers import AutoTokenizer

    base = make_tiny_llama(work / "base", shards=1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(experiment)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp_id) as run:
            info = None
            if with_model:
                info = mlflow.transformers.log_model(
                    transformers_model={"model": peft_model(base), "tokenizer": tokenizer},
                    artifact_path="model",
                    task="text-generation",
                    pip_requirements=["transformers", "peft", "torch"],
                )
            with tempfile.TemporaryDirectory() as tmp:
                tokenizer.save_pretrained(tmp)
                for path in glob.glob(os.path.join(tmp, "*")):
                    mlflow.log_artifact(path, "tokenizer")
            mlflow.log_dict(
                {"base_model": str(base), "fine_tuned": True, "is_adapter": True}, "model_info.json"
            )
            mlflow.log_metrics({"train_loss": 1.23, "eval_loss": 1.31})
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # unset: nothing else may write there
    return TrainingRun(
        run.info.run_id, info.model_id if info else None, _seed_location(run.info.run_id, uri, base), base
    )


def log_mlflow2_training_run(uri: str, experiment: str, work: Path) -> TrainingRun:
    """The MLflow 2 layout: what MLflow 2's log_model did, i.e. the flavor's save_model into a folder
    uploaded as the run's `model/` artifacts (MLmodel, peft/, components/tokenizer, ...)."""
    import mlflow
    from transformers import AutoTokenizer

    base = make_tiny_llama(work / "base", shards=1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    saved = work / "saved-model"
    mlflow.transformers.save_model(
        transformers_model={"model": peft_model(base, seed=7), "tokenizer": tokenizer},
        path=str(saved),
        task="text-generation",
        pip_requirements=["transformers", "peft", "torch"],
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment(experiment))
    client.log_artifacts(run.info.run_id, str(saved), "model")
    tok = work / "tok"
    tokenizer.save_pretrained(tok)
    client.log_artifacts(run.info.run_id, str(tok), "tokenizer")
    client.set_terminated(run.info.run_id)
    return TrainingRun(run.info.run_id, None, _seed_location(run.info.run_id, uri, base), base)


def seed_era_version(
    client: MlflowClient, name: str, run_id: str, score: float, *, tags: dict[str, str] | None = None
) -> str:
    """What scripts/deployment_script.py's register_model_in_mlflow leaves: a version from
    runs:/<id>/model with its own tags (weighted_score, is_best, ...), moved to Production with the
    others archived, and no alias. (Today's server wants the run_id beside a runs:/ source.)"""
    import warnings

    try:
        client.create_registered_model(
            name, description="Fine-tuned TinyLlama model for e-commerce customer service"
        )
    except Exception as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    seed_tags = (
        {
            "deployment_timestamp": "2025-06-01T10:00:00",
            "weighted_score": str(score),
            "is_best": "True",
            "improvement": "0.0",
        }
        if tags is None
        else tags
    )
    mv = client.create_model_version(
        name, f"runs:/{run_id}/model", run_id=run_id, tags=seed_tags, description="E-commerce Chatbot Model"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, mv.version, "Production", archive_existing_versions=True)
    return str(mv.version)


def registered_files(uri: str, name: str, version: str, dst: Path) -> Path:
    """download_artifacts("models:/<name>/<version>") as a user with MLFLOW_TRACKING_URI set calls it
    (MLflow resolves models:/ URIs with its global tracking and registry URIs); both unset after."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    mlflow.set_tracking_uri(uri)
    try:
        return Path(download_artifacts(f"models:/{name}/{version}", dst_path=str(dst)))
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
