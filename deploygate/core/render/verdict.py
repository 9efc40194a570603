"""`deploygate-verdict.json`: why this version was deployed, pushed with the model and signed with it.

Pure data from the run's GateResult as it stands when the Hub folder is built (decided, version
registered, not yet pushed). Every value it shares with deployment_info.json / model_comparison.json
comes from the same functions in result_documents.py, so the two agree; the schema is in
docs/signing.md. Serialised by json, never templated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from deploygate import __version__
from deploygate.core.model import GateResult
from deploygate.core.render.result_documents import (
    checks_document,
    context_document,
    replaced_champion,
    tidy,
)

VERDICT_FORMAT = 1
VERDICT_KIND = "deploygate/verdict"


def verdict_document(result: GateResult) -> dict[str, Any]:
    """The verdict of the run that ships `result.registered_version`."""
    cfg, dec, cand, base = result.config, result.decision, result.candidate, result.baseline
    checks = checks_document(result)
    return {
        "format": VERDICT_FORMAT,
        "kind": VERDICT_KIND,
        "deploygate_version": __version__,
        "registry": {
            "name": cfg.registry_name,
            "version": result.registered_version,
            "alias": cfg.champion_alias,
            "previous_version": replaced_champion(result),
        },
        "decision": dec.verdict,
        "rule": dec.rule,
        "reason": dec.reason,
        "forced": dec.verdict == "forced",
        "skipped_checks": list(dec.skipped_checks),
        "threshold": cfg.min_improvement_threshold,
        "weighted_score": cand.score,
        "baseline_score": base.score if base else None,
        "improvement": dec.improvement,
        "metrics": dict(result.metrics.values),
        "weights": dict(cand.weights),
        "baseline_metrics": dict(base.metrics) if base else None,
        "guardrails": checks["guardrails"],
        "significance": checks["significance"],
        "metric_signature": checks["comparability"]["candidate_signature"],
        "comparability": checks["comparability"]["status"],
        "mlflow": {"experiment": cfg.experiment_name, "run_id": result.mlflow_run_id},
        "context": context_document(result.context),
        "decided_at": result.started_at,
    }


def verdict_text(result: GateResult) -> str:
    return json.dumps(tidy(verdict_document(result)), indent=2, allow_nan=False) + "\n"


def parse_verdict(text: str | bytes) -> Mapping[str, Any] | None:
    """The verdict a folder carries; None for anything that is not one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("kind") != VERDICT_KIND:
        return None
    return data


def verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    """The verdict in a few lines, for a terminal or a step summary."""
    reg = verdict.get("registry") or {}
    ctx = verdict.get("context") or {}
    mlflow = verdict.get("mlflow") or {}
    previous = reg.get("previous_version")
    lines = [
        f"version: {reg.get('name')} v{reg.get('version')}"
        + (f" (replaced v{previous})" if previous else " (first model)"),
        f"decision: {verdict.get('decision')} ({verdict.get('rule')}): {verdict.get('reason')}",
        f"weighted score: {verdict.get('weighted_score')}  baseline: {verdict.get('baseline_score')}  "
        f"threshold: {verdict.get('threshold')}",
        f"gate run: {mlflow.get('run_id')}  git sha: {ctx.get('git_sha')}  actor: {ctx.get('actor')}",
    ]
    if ctx.get("ci_run_url"):
        lines.append(f"workflow run: {ctx.get('ci_run_url')}")
    if verdict.get("forced"):
        lines.append(f"forced by {ctx.get('actor')}: {ctx.get('reason')}")
    return lines
