"""The MLflow record layout: every tag and metric name deploygate writes or reads, and the builders
of a gate run's, a version's and a rollback's tags. One place, so that the writer (service/), the
reader (adapters/mlflow_registry.py) and the user's readers agree on one spelling.

Pure: values in, dictionaries of strings out. Renaming anything here breaks registries written by
earlier releases and the users' workflows that read them: add, never rename.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlparse

from deploygate import __version__

if TYPE_CHECKING:
    from deploygate.core.decision import Baseline, Decision, GuardrailCheck
    from deploygate.core.metrics import EvaluationMetrics
    from deploygate.core.model import HubPush, ModelSource, RunContext
    from deploygate.core.settings import GateConfig
    from deploygate.core.signature import MetricSignature

TAG_PREFIX = "deploygate."

# --- on a registered model version (what a later run reads back) -------------------------------
TAG_SCORE = "deploygate.weighted_score"
TAG_METRIC = "deploygate.metric."  # one per metric, for the MLflow UI (names folded to MLflow keys)
TAG_METRICS = "deploygate.metrics"  # all metrics as JSON under their real names: what is read back
TAG_CANDIDATE = "deploygate.candidate_key"
TAG_GATE_RUN = "deploygate.gate_run_id"
TAG_GIT_SHA = "deploygate.git_sha"
TAG_HUB_COMMIT = "deploygate.hf_commit"
TAG_HUB_URL = "deploygate.hf_commit_url"
TAG_SIGNATURE_SHA256 = "deploygate.signature_sha256"  # SHA-256 of the model.sig pushed with the version
TAG_SIGNING = "deploygate.signing"  # how it was signed: key | sigstore
TAG_SIGNATURE = "deploygate.signature"
TAG_OVERRIDE = "deploygate.override"  # on a version: "forced" or "rollback" when a human chose it
TAG_DECISION = "deploygate.decision"
# on a version, at registration: why it was deployed and the champion it was compared with (its card says so)
TAG_REASON = "deploygate.reason"
TAG_BASELINE = "deploygate.baseline"
TAG_SOURCE_RUN = "deploygate.source_run_id"
TAG_SOURCE_MODEL_ID = "deploygate.source_model_id"
TAG_ADOPTED = "deploygate.adopted"
MAX_VERSION_TAG = 5000  # MLflow's limit on a tag value (enforced by PostgreSQL / MySQL backends)
REASON_TAG_MAX = 1000  # the decision's reason as recorded on a version (its card states it)

# --- on the registered model --------------------------------------------------------------------
# The promotion history: one tag per entry, `deploygate.history.<UTC time>.<run id>` (a JSON object
# each, so it never outgrows a tag, and concurrent writers never overwrite each other). The release
# before kept a JSON list in the one tag `deploygate.history`: still read.
TAG_HISTORY = "deploygate.history"
HISTORY_KEEP = 100  # entry tags kept; older ones are deleted when a promotion is recorded

# --- on a gate run ------------------------------------------------------------------------------
TAG_VERSION = "deploygate.version"
TAG_EVENT = "deploygate.event"
TAG_REGISTRY_NAME = "deploygate.registry_name"
TAG_GIT_REF = "deploygate.git_ref"
TAG_CI_RUN_URL = "deploygate.ci_run_url"
TAG_ACTOR = "deploygate.actor"
TAG_PR_NUMBER = "deploygate.pr_number"
TAG_SOURCE_MODEL = "deploygate.source_model"
TAG_REQUEST_REASON = "deploygate.request_reason"
TAG_RULE = "deploygate.rule"
TAG_COMPARABILITY = "deploygate.comparability"
TAG_GUARDRAILS = "deploygate.guardrails"
TAG_SKIPPED_CHECKS = "deploygate.skipped_checks"
TAG_STATUS = "deploygate.status"
TAG_DEPLOYED = "deploygate.deployed"
TAG_ERROR = "deploygate.error"
TAG_REGISTERED_VERSION = "deploygate.registered_version"
TAG_SUPERSEDED_BY = "deploygate.superseded_by"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag: the UI links the commit
ERROR_TAG_MAX = 4000
# on a rollback run
TAG_MODE = "deploygate.mode"
TAG_ROLLBACK_FROM = "deploygate.rollback_from"
TAG_ROLLBACK_TO = "deploygate.rollback_to"

# Metrics a gate run logs besides the input metrics (which are logged under their own names).
METRIC_SCORE = "weighted_score"
METRIC_BASELINE = "baseline_score"
METRIC_IMPROVEMENT = "improvement"
METRIC_IMPROVEMENT_PCT = "improvement_pct"
METRIC_DEPLOYED = "deployed"
CONTRIBUTION_PREFIX = "contribution_"
RUN_SUMMARY_METRICS = frozenset(
    {METRIC_SCORE, METRIC_BASELINE, METRIC_IMPROVEMENT, METRIC_IMPROVEMENT_PCT, METRIC_DEPLOYED}
)

# Artifacts of a gate run
STATS_ARTIFACT = "evaluation/example_stats.json"  # per-example statistics, for a later significance test
RESULT_ARTIFACTS = "deployment"  # the three result files
CANDIDATE_ARTIFACTS = "candidate_model"  # a local candidate folder, logged to the gate run


def mlflow_key(name: str) -> str:
    """A metric name as an MLflow metric / tag key: letters, digits and `_-.: ` (a `/` would make it
    a path MLflow may refuse), everything else `_`. Standard names pass unchanged."""
    key = "".join(c if (c.isascii() and c.isalnum()) or c in "_-.: " else "_" for c in name).strip(" .")
    return key[:200] or "_"


def metric_keys(names: list[str]) -> dict[str, str]:
    """name -> a unique MLflow key (two names may fold to the same key: number the later ones)."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        key = base = mlflow_key(name)
        n = 2
        while key in used:
            key, n = f"{base}_{n}", n + 1
        keys[name] = key
        used.add(key)
    return keys


def metrics_json(metrics: EvaluationMetrics) -> str:
    return json.dumps(dict(metrics.values), sort_keys=True)


def gate_run_tags(cfg: GateConfig, ctx: RunContext, source: ModelSource | None) -> dict[str, str]:
    """The tags a gate run starts with: who, where, what."""
    tags = {TAG_VERSION: __version__, TAG_EVENT: ctx.event_name, TAG_REGISTRY_NAME: cfg.registry_name}
    optional = {
        TAG_GIT_SHA: ctx.git_sha,
        MLFLOW_GIT_COMMIT: ctx.git_sha,
        TAG_GIT_REF: ctx.git_ref,
        TAG_CI_RUN_URL: ctx.ci_run_url,
        TAG_ACTOR: ctx.actor,
        TAG_PR_NUMBER: str(ctx.pr_number) if ctx.pr_number else None,
        TAG_SOURCE_RUN: source.run_id if source else None,
        TAG_SOURCE_MODEL: source.describe() if source else None,
        TAG_REQUEST_REASON: ctx.reason,
    }
    tags.update({k: v for k, v in optional.items() if v})
    return tags


def gate_run_metrics(
    metrics: EvaluationMetrics,
    contributions: Mapping[str, float],
    score: float,
    baseline: Baseline | None,
    decision: Decision,
) -> dict[str, float]:
    """The input metrics under their MLflow keys, each contribution, the score and the comparison."""
    keys = metric_keys(list(metrics.values))
    logged = {keys[k]: v for k, v in metrics.values.items()}
    logged.update({f"{CONTRIBUTION_PREFIX}{keys[k]}": v for k, v in contributions.items()})
    logged[METRIC_SCORE] = score
    if baseline is not None:
        logged[METRIC_BASELINE] = baseline.score
    if decision.improvement is not None:
        logged[METRIC_IMPROVEMENT] = decision.improvement
    if decision.improvement_pct is not None:
        logged[METRIC_IMPROVEMENT_PCT] = decision.improvement_pct
    return logged


def decision_tags(
    decision: Decision,
    metrics: EvaluationMetrics,
    signature: MetricSignature,
    comparability: str,
    checks: tuple[GuardrailCheck, ...] | list[GuardrailCheck],
) -> dict[str, str]:
    """What a gate run decided and why: the verdict, the rule, the checks."""
    tags = {
        TAG_DECISION: decision.verdict,
        TAG_RULE: decision.rule,
        TAG_REASON: decision.reason,
        TAG_SIGNATURE: signature.to_json(),
        TAG_METRICS: metrics_json(metrics),
        TAG_COMPARABILITY: comparability,
    }
    if checks:
        tags[TAG_GUARDRAILS] = "; ".join(c.describe() for c in checks)
    if decision.skipped_checks:
        tags[TAG_SKIPPED_CHECKS] = "; ".join(decision.skipped_checks)
    return tags


def status_tags(status: str, deployed: bool) -> dict[str, str]:
    return {TAG_STATUS: status, TAG_DEPLOYED: str(deployed).lower()}


def failure_tags(message: str) -> dict[str, str]:
    return {TAG_STATUS: "failed", TAG_ERROR: message[:ERROR_TAG_MAX]}


def version_tags(
    *,
    score: float,
    candidate_key: str,
    gate_run_id: str,
    signature: MetricSignature,
    verdict: str,
    metrics: EvaluationMetrics,
    reason: str,
    baseline: str,
    git_sha: str | None,
    source_run_id: str | None,
    model_id: str | None,
) -> dict[str, str]:
    """The tags a version is registered with: what a later run reads back as the champion's record,
    and what the version's model card states (so that a re-run renders the same card)."""
    tags = {
        TAG_SCORE: repr(score),
        TAG_CANDIDATE: candidate_key,
        TAG_GATE_RUN: gate_run_id,
        TAG_SIGNATURE: signature.to_json(),
        TAG_DECISION: verdict,
        # All metrics, under their own names, as one JSON tag (names may hold any character);
        # one tag per metric too, for reading in the MLflow UI.
        TAG_METRICS: metrics_json(metrics),
        **{
            f"{TAG_METRIC}{mkey}": repr(metrics.values[name])
            for name, mkey in metric_keys(list(metrics.values)).items()
        },
        TAG_REASON: reason[:REASON_TAG_MAX],
        TAG_BASELINE: baseline,
    }
    if git_sha:
        tags[TAG_GIT_SHA] = git_sha
    if source_run_id:
        tags[TAG_SOURCE_RUN] = source_run_id
    if model_id:
        tags[TAG_SOURCE_MODEL_ID] = model_id
    return tags


def hub_tags(sha: str, url: str) -> dict[str, str]:
    return {TAG_HUB_COMMIT: sha, TAG_HUB_URL: url}


def signature_tags(signature_sha256: str | None, method: str | None) -> dict[str, str]:
    """The version's signature, as pushed with it (nothing when the push was not signed)."""
    if signature_sha256 is None:
        return {}
    return {TAG_SIGNATURE_SHA256: signature_sha256, TAG_SIGNING: method or "unknown"}


def rollback_run_tags(
    ctx: RunContext,
    *,
    registry_name: str,
    replaced: str,
    target: str,
    actor: str,
    reason: str,
    hub: HubPush | None = None,
) -> dict[str, str]:
    tags = {
        TAG_MODE: "rollback",
        TAG_DECISION: "rollback",
        TAG_ROLLBACK_FROM: replaced,
        TAG_ROLLBACK_TO: target,
        TAG_ACTOR: actor,
        TAG_REASON: reason,
        TAG_REGISTRY_NAME: registry_name,
    }
    if ctx.git_sha:
        tags[TAG_GIT_SHA] = ctx.git_sha
    if ctx.ci_run_url:
        tags[TAG_CI_RUN_URL] = ctx.ci_run_url
    if hub is not None:
        tags.update(hub_tags(hub.sha, hub.url))
    return tags


def rollback_entry(
    version: str,
    score: float | None,
    at: str,
    run_id: str,
    replaced: str,
    actor: str,
    reason: str,
    hf_commit: str | None,
) -> dict[str, object]:
    """A rollback's entry in the promotion history (`rollback_from` makes it pop back, see core/history.py)."""
    return {
        "version": version,
        "score": score,
        "at": at,
        "run_id": run_id,
        "rollback_from": replaced,
        "actor": actor,
        "reason": reason,
        "hf_commit": hf_commit,
    }


# --- where MLflow's UI shows a record -------------------------------------------------------------

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def run_page(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def version_page(base: str, name: str, version: str) -> str:
    return f"{base}/#/models/{quote(name, safe='')}/versions/{version}"


def local_store(tracking_uri: str) -> Path | None:
    """The file or folder of a local tracking store (sqlite:///..., file:..., a plain path), made
    absolute; None for a server (http(s), databases, databricks)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).resolve()
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(parsed.path).resolve()
    if tracking_uri.split(":", 1)[0] in ("databricks", "databricks-uc", "uc"):
        return None
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(tracking_uri).resolve()
    return None


def local_ui_command(tracking_uri: str) -> str | None:
    """The command that shows a local store in the MLflow UI (at LOCAL_UI); None for a server."""
    path = local_store(tracking_uri)
    if path is None:
        return None
    uri = f"sqlite:///{path}" if tracking_uri.startswith("sqlite:") else path.as_uri()
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
