"""The contents of the result files: `deployment_info.json` says what was decided and done;
`model_comparison.json` says why, metric by metric. Pure: a GateResult in, JSON text out (the
writing is adapters/result_files.py). Their layouts are documented in the README."""

from __future__ import annotations

import json
from typing import Any

from deploygate import __version__
from deploygate.core.decision import THRESHOLD_TOLERANCE
from deploygate.core.model import GateResult, RunContext
from deploygate.core.records import LOCAL_UI, local_ui_command, run_page, version_page

INFO_FILE = "deployment_info.json"
COMPARISON_FILE = "model_comparison.json"
LOG_FILE = "deployment_logs.txt"


def deployment_info(result: GateResult) -> dict[str, Any]:
    cfg, ctx, dec = result.config, result.context, result.decision
    # A local store has no server to link to: the command that shows it, and where it will show the run.
    ui = local_ui_command(cfg.mlflow_tracking_uri)
    run_url, version_url = result.mlflow_run_url, result.model_version_url
    if ui and run_url is None and result.mlflow_run_id and result.mlflow_experiment_id:
        run_url = run_page(LOCAL_UI, result.mlflow_experiment_id, result.mlflow_run_id)
    if ui and version_url is None and result.registered_version:
        version_url = version_page(LOCAL_UI, cfg.registry_name, result.registered_version)
    # the champion this run replaced: only a deployed run replaced one
    replaced = replaced_champion(result) if result.deployed else None
    return {
        "deploygate_version": __version__,
        "status": result.status,
        "deployed": result.deployed,
        "decision": dec.verdict,
        "rule": dec.rule,
        "reason": dec.reason,
        "forced": dec.verdict == "forced",
        "notes": list(dec.notes),
        "skipped_checks": list(dec.skipped_checks),
        "error": result.error,
        "threshold": cfg.min_improvement_threshold,
        "weighted_score": result.candidate.score,
        "baseline_score": result.baseline.score if result.baseline else None,
        "improvement": dec.improvement,
        "improvement_pct": dec.improvement_pct,
        "registry": {
            "name": cfg.registry_name,
            "alias": cfg.champion_alias,
            "promotion": cfg.promotion,
            "version": result.registered_version,
            "previous_version": replaced,
            "url": version_url,
        },
        "mlflow": {
            "experiment": cfg.experiment_name,
            "run_id": result.mlflow_run_id,
            "run_url": run_url,
            "ui_command": ui,  # for a local store: serves run_url / registry.url; null for a server
        },
        "hub": _hub(result),
        "context": context_document(ctx),
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "warnings": list(result.warnings),
        "rerun": rerun_note(result),
        **seed_deployment_info(result),
    }


def replaced_champion(result: GateResult) -> str | None:
    """The champion version a deploy of this run replaces (None: a first model, or a best-ever baseline)."""
    base = result.baseline
    return base.version if base is not None and base.source == "champion" else None


def context_document(ctx: RunContext) -> dict[str, Any]:
    return {
        "event": ctx.event_name,
        "git_sha": ctx.git_sha,
        "ref": ctx.git_ref,
        "repository": ctx.repository,
        "actor": ctx.actor,
        "ci_run_url": ctx.ci_run_url,
        "pr_number": ctx.pr_number,
        "reason": ctx.reason,
    }


# The keys the seed's deployment script wrote, with its meanings, beside deploygate's own: its
# workflow's summary step reads should_deploy, mlflow_registered and huggingface_deployed with jq.
def seed_deployment_info(result: GateResult) -> dict[str, Any]:
    return {
        "should_deploy": result.decision.wants_deploy,  # the verdict (forced included), carried out or not
        "force_deploy": result.config.force_deploy,
        "min_improvement_threshold": result.config.min_improvement_threshold,
        "mlflow_registered": result.registered_version is not None,
        "huggingface_deployed": result.hub is not None and result.status != "failed",
        "mlflow_model_version": result.registered_version,
        "deployment_timestamp": result.started_at,
        "deployment_run_id": result.mlflow_run_id,
    }


def seed_comparison(result: GateResult) -> dict[str, Any]:
    """The seed's model_comparison.json keys; its "historical best" is deploygate's baseline (the
    champion by default). `improvement` is the seed's number (0.0 without a baseline)."""
    score, base = result.candidate.score, result.baseline
    improvement = 0.0 if base is None else score - base.score
    return {
        "current_score": score,
        "current_contributions": dict(result.candidate.contributions),
        "historical_best_score": None if base is None else base.score,
        "best_run_id": None if base is None else base.run_id,
        "is_best": base is None or score > base.score,
        "improvement": improvement,
        "improvement_percentage": improvement / base.score * 100 if base is not None and base.score else 0.0,
        "timestamp": result.started_at,
    }


def rerun_note(result: GateResult) -> str | None:
    """For a run that failed after registering its version: what running the same command again does."""
    version = result.registered_version
    if result.status != "failed" or version is None:
        return None
    cfg = result.config
    hub = (
        f" finds the Hub tag v{version} on {result.hub.repo_id} and pushes nothing again,"
        if result.hub
        else f" pushes it to {cfg.hf_model_id},"
        if cfg.hf_model_id and not cfg.skip_hf_push
        else ""
    )
    return (
        f"{cfg.registry_name} v{version} was registered before the run failed; re-running the same command "
        f"(same source and git sha) reuses v{version} instead of registering another version,{hub} and moves "
        f"the {cfg.champion_alias!r} alias to it if it still wins"
    )


def tidy(value: Any) -> Any:
    """Floats without summation noise (0.2264, not 0.22640000000000002), for the people who read the files."""
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v) for v in value]
    return value


def _hub(result: GateResult) -> dict[str, Any] | None:
    """The Hub push, and the folder exported for it; null when nothing was built."""
    hub, export = result.hub, result.hub_export_dir
    if hub is None and export is None:
        return None
    return {
        "repo_id": hub.repo_id if hub else None,
        "commit": hub.sha if hub else None,
        "url": hub.url if hub else None,
        "tag": hub.tag if hub else None,
        "export_dir": str(export) if export is not None else None,
    }


def checks_document(result: GateResult) -> dict[str, Any]:
    dec = result.decision
    sig = dec.significance
    return {
        "guardrails": [
            {"metric": c.metric, "kind": c.kind, "limit": c.limit, "value": c.value, "passed": c.passed}
            for c in dec.guardrails
        ],
        "significance": None
        if sig is None
        else {
            "observed": sig.observed,
            "lower_bound": sig.lower_bound,
            "interval": list(sig.interval),
            "p_value": sig.p_value,
            "confidence": sig.confidence,
            "resamples": sig.resamples,
            "significant": sig.significant,
        },
        "comparability": {
            "status": result.comparability,
            "differences": list(result.signature_differences),
            "candidate_signature": json.loads(result.signature.to_json()) if result.signature else None,
        },
    }


def model_comparison(result: GateResult) -> dict[str, Any]:
    cand, base, dec = result.candidate, result.baseline, result.decision
    per_metric: dict[str, Any] = {}
    for name, weight in cand.weights.items():
        value = result.metrics.values[name]
        before = base.metrics.get(name) if base else None
        per_metric[name] = {
            "weight": weight,
            "candidate": value,
            "baseline": before,
            "delta": None if before is None else value - before,
            "contribution": cand.contributions[name],
            "contribution_delta": None if before is None else weight * (value - before),
        }
    return {
        "candidate": {
            "weighted_score": cand.score,
            "metrics": dict(result.metrics.values),
            "contributions": dict(cand.contributions),
            "weights": dict(cand.weights),
            "keys_used": dict(result.metrics.keys_used),
            "source_file": result.metrics.source,
        },
        "baseline": None
        if base is None
        else {
            "source": base.source,
            "version": base.version,
            "run_id": base.run_id,
            "weighted_score": base.score,
            "metrics": dict(base.metrics),
        },
        "improvement_detail": {  # deploygate's; `improvement` is the seed's number (seed_comparison)
            "absolute": dec.improvement,
            "relative_pct": dec.improvement_pct,
            "threshold": result.config.min_improvement_threshold,
            # null for a first model: there is nothing to improve on
            "meets_threshold": None
            if dec.improvement is None
            else dec.improvement + THRESHOLD_TOLERANCE >= result.config.min_improvement_threshold,
        },
        "per_metric": per_metric,
        "checks": checks_document(result),
        **seed_comparison(result),
    }


def info_text(result: GateResult) -> str:
    return json.dumps(tidy(deployment_info(result)), indent=2, allow_nan=False) + "\n"


def comparison_text(result: GateResult) -> str:
    return json.dumps(tidy(model_comparison(result)), indent=2, allow_nan=False) + "\n"
