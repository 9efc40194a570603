"""Small helpers the gate tests share: write input files, run the CLI in-process, read MLflow."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploygate.shells.cli import main

SEED_METRICS = {
    "bleu1": 0.412,
    "bleu2": 0.281,
    "bleu3": 0.198,
    "bleu4": 0.141,
    "rouge1_precision": 0.52,
    "rougeL_precision": 0.452,
    "rougeL_recall": 0.41,
    "rougeL_fmeasure": 0.43,
}


def metrics_scaled(delta: float) -> dict[str, float]:
    """The seed metrics with every weighted metric moved by `delta` (weighted score moves by delta)."""
    return {
        k: (v + delta if k in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL_precision") else v)
        for k, v in SEED_METRICS.items()
    }


@dataclass
class GateRun:
    code: int
    out: str
    err: str
    output_dir: Path

    def info(self) -> dict[str, Any]:
        return json.loads((self.output_dir / "deployment_info.json").read_text())

    def comparison(self) -> dict[str, Any]:
        return json.loads((self.output_dir / "model_comparison.json").read_text())


@contextlib.contextmanager
def environ(updates: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `updates` for the block, restored afterwards (for in-process CLI runs)."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def local_model(folder: Path, marker: str = "m") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(f"flavors: {{}}\nmarker: {marker}\n")
    return folder


def run_gate(
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    uri: str,
    registry: str,
    experiment: str,
    metrics: dict[str, Any] | str | None = None,
    location: dict[str, Any] | None = None,
    extra: list[str] | None = None,
    name: str = "run",
    hub: bool = False,
) -> GateRun:
    folder = tmp / name
    metrics_path = write_json(folder / "metrics.json", SEED_METRICS if metrics is None else metrics)
    if location is None:
        location = {"local_path": str(local_model(folder / "model", name))}
    loc_path = write_json(folder / "location.json", location)
    out_dir = folder / "out"
    argv = [
        "--evaluation-results",
        str(metrics_path),
        "--model-artifact-path",
        str(loc_path),
        "--output-dir",
        str(out_dir),
        "--mlflow-tracking-uri",
        uri,
        "--registry-name",
        registry,
        "--experiment-name",
        experiment,
        *([] if hub else ["--skip-hf-push"]),
        *(extra or []),
    ]
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return GateRun(code, captured.out, captured.err, out_dir)
