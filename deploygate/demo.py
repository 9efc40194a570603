"""`deploygate demo`: the gate three times against a local MLflow store, no accounts, no servers.

A first model deploys, a worse one is rejected, a better one replaces it. Everything lands in one
folder (the MLflow sqlite store, each run's result files) and the command says where.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from deploygate.errors import EXIT_OK

CANDIDATES = (
    ("1-first", {"bleu1": 0.412, "bleu2": 0.281, "bleu3": 0.198, "bleu4": 0.141, "rougeL_precision": 0.452}),
    ("2-worse", {"bleu1": 0.405, "bleu2": 0.270, "bleu3": 0.190, "bleu4": 0.133, "rougeL_precision": 0.447}),
    ("3-better", {"bleu1": 0.431, "bleu2": 0.302, "bleu3": 0.219, "bleu4": 0.160, "rougeL_precision": 0.468}),
)


def _write_model(folder: Path, name: str) -> None:
    """A stand-in model folder (the registry copies whatever is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nmodel_name: {name}\n")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))


def run_demo(folder: Path | None) -> int:
    from deploygate.app import context_from_env, execute, prepare
    from deploygate.cli import print_result
    from deploygate.result import RunContext

    root = (folder or Path(tempfile.mkdtemp(prefix="deploygate-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{root / 'mlflow.db'}"
    print(f"deploygate demo in {root} (MLflow store {store})\n")
    rows = []
    for name, metrics in CANDIDATES:
        cdir = root / "candidates" / name
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _write_model(cdir / "model", name)
        (cdir / "fine_tuned_model_location.json").write_text(
            json.dumps({"local_path": "model", "model_name": f"demo-{name}", "fine_tuned": True}, indent=2)
        )
        given = {
            "evaluation-results": str(cdir / "metrics.json"),
            "model-artifact-path": str(cdir / "fine_tuned_model_location.json"),
            "output-dir": str(root / "results" / name),
            "mlflow-tracking-uri": store,
            "registry-name": "demo-chatbot",
            "experiment-name": "deploygate-demo",
            "skip-hf-push": "true",
        }
        cfg, cand = prepare(given, {})
        ctx = RunContext(event_name="demo", git_sha=f"demo{name[0]}" * 5, actor=context_from_env({}).actor)
        print(f"--- candidate {name}")
        result = execute(cfg, ctx, {}, cand)
        print_result(result)
        print()
        rows.append((name, result))
    print("summary:")
    for name, result in rows:
        version = f"v{result.registered_version}" if result.registered_version else "-"
        print(f"  {name:<9} score {result.candidate.score:.4f}  {result.decision.verdict:<6} {version:<4} {result.decision.reason}")
    print(f"\nresult files: {root / 'results'}/*/deployment_info.json, model_comparison.json, deployment_logs.txt")
    print(f"browse the runs: mlflow ui --backend-store-uri {store}")
    return EXIT_OK
