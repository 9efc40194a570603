"""One gate run, in order: score, baseline, decide, (register, ship, promote), record, report.

The only place that orders the steps. It gets its adapters passed in (`registry`, `shipper`),
so tests can hand it real servers or hand-written fakes. Order matters for safety:
  1. everything the user gave is checked before the first write (bad input writes nothing);
  2. a version is registered before the Hub push (the Hub tag names it), but the champion alias
     moves only after the push succeeded: a failure leaves the old champion in place;
  3. a re-run of the same candidate (same source, same git sha) reuses its version.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from deploygate import __version__
from deploygate.adapters.mlflow_registry import (
    MAX_VERSION_TAG,
    TAG_BASELINE,
    TAG_CANDIDATE,
    TAG_GATE_RUN,
    TAG_GIT_SHA,
    TAG_HUB_COMMIT,
    TAG_HUB_URL,
    TAG_METRIC,
    TAG_METRICS,
    TAG_OVERRIDE,
    TAG_REASON,
    TAG_SCORE,
    TAG_SIGNATURE,
    MlflowRegistry,
    ModelSource,
    ResolvedSource,
)
from deploygate.adapters.result_files import write_outputs
from deploygate.core.decision import Baseline, Policy, Significance, check_guardrails, decide
from deploygate.core.errors import DeployGateError, ModelSourceError
from deploygate.core.metrics import EvaluationMetrics, weighted_score
from deploygate.core.model import GateResult, HistoryPoint, HubPush, RunContext
from deploygate.core.promotion import Me, after_move, before_move
from deploygate.core.provenance import baseline_json
from deploygate.core.redact import RedactingFormatter, redact
from deploygate.core.settings import GateConfig
from deploygate.core.signature import MetricSignature, check_comparable

if TYPE_CHECKING:
    from deploygate.core.evaluation import ExampleStats

log = logging.getLogger("deploygate")


@dataclass(frozen=True)
class Candidate:
    """The candidate as the shell read it: validated metrics and where the model is."""

    metrics: EvaluationMetrics
    source: ModelSource | None
    signature: MetricSignature
    location: Mapping[str, Any] = field(default_factory=dict)  # the model location record, as read
    stats: ExampleStats | None = None  # per-example statistics, when computed from predictions


@dataclass(frozen=True)
class ShipRequest:
    """What the Hub stage needs to build and push one deployment."""

    config: GateConfig
    context: RunContext
    candidate: Candidate
    version: str
    score: float
    baseline: Baseline | None
    reason: str
    verdict: str
    mlflow_run_url: str | None
    model_version_url: str | None
    created_at: str
    mlflow_run_id: str | None = None


class Shipper(Protocol):
    """Builds the Hub folder (merge, tokenizer, card) and pushes it; returns the commit."""

    def preflight(self, candidate: Candidate, config: GateConfig) -> None:
        """Check the adapter and base model before the first write (InputError when unusable)."""

    def ship(self, request: ShipRequest) -> HubPush | None: ...

    def sync(self, config: GateConfig, version: str, why: str) -> HubPush | None:
        """Make the Hub's main hold `version`'s files again."""

    def close(self) -> None:
        """Drop anything preflight fetched."""


Clock = Callable[[], datetime]


@contextlib.contextmanager
def capture_log() -> Iterator[io.StringIO]:
    """Everything logged under `deploygate` during the run, for deployment_logs.txt."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("deploygate")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _run_tags(cfg: GateConfig, ctx: RunContext, cand: Candidate) -> dict[str, str]:
    tags = {
        "deploygate.version": __version__,
        "deploygate.event": ctx.event_name,
        "deploygate.registry_name": cfg.registry_name,
    }
    optional = {
        "deploygate.git_sha": ctx.git_sha,
        "mlflow.source.git.commit": ctx.git_sha,
        "deploygate.git_ref": ctx.git_ref,
        "deploygate.ci_run_url": ctx.ci_run_url,
        "deploygate.actor": ctx.actor,
        "deploygate.pr_number": str(ctx.pr_number) if ctx.pr_number else None,
        "deploygate.source_run_id": cand.source.run_id if cand.source else None,
        "deploygate.source_model": cand.source.describe() if cand.source else None,
        "deploygate.request_reason": ctx.reason,
    }
    tags.update({k: v for k, v in optional.items() if v})
    return tags


def mlflow_key(name: str) -> str:
    """A metric name as an MLflow metric / tag key: letters, digits and `_-.: ` (a `/` would make it
    a path MLflow may refuse), everything else `_`. Standard names pass unchanged."""
    key = "".join(c if (c.isascii() and c.isalnum()) or c in "_-.: " else "_" for c in name).strip(" .")
    return key[:200] or "_"


def _metric_keys(names: list[str]) -> dict[str, str]:
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


def run(
    cfg: GateConfig,
    ctx: RunContext,
    cand: Candidate,
    *,
    registry: MlflowRegistry,
    shipper: Shipper | None = None,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
) -> GateResult:
    """Run the gate once. Raises DeployGateError subclasses; the result files are written anyway."""
    with capture_log() as buffer:
        try:
            return _run(cfg, ctx, cand, registry=registry, shipper=shipper, clock=clock, buffer=buffer, sleep=sleep)
        finally:
            if shipper is not None:
                shipper.close()


def _run(
    cfg: GateConfig,
    ctx: RunContext,
    cand: Candidate,
    *,
    registry: MlflowRegistry,
    shipper: Shipper | None,
    clock: Clock,
    buffer: io.StringIO,
    sleep: Callable[[float], None],
) -> GateResult:
    started = clock().isoformat()
    warnings = list(cfg.warnings)
    for note in (*cfg.warnings, *cand.metrics.notes):
        log.info("%s", note)
    score = weighted_score(cand.metrics, cfg.weights)
    log.info("candidate weighted score %.6f (%s)", score.score,
             ", ".join(f"{k} {v:.4f} x {cfg.weights.values[k]:.3f}" for k, v in cand.metrics.values.items()))

    # Baseline and decision: reads only.
    by_stage = cfg.promotion == "stage"
    if cfg.baseline == "champion":
        baseline = registry.champion_baseline(cfg.registry_name, cfg.champion_alias, by_stage=by_stage,
                                              weights=cfg.weights, scale=cfg.metrics_scale)
    else:
        baseline = registry.best_ever_baseline(cfg.experiment_name)
        if baseline is None:  # never "first model" while the registry has a production model
            baseline = registry.champion_baseline(cfg.registry_name, cfg.champion_alias, by_stage=by_stage,
                                                  weights=cfg.weights, scale=cfg.metrics_scale)
            if baseline is not None:
                baseline = replace(baseline, origin=f"no past gate run in {cfg.experiment_name!r}; "
                                                    f"{baseline.origin or f'the champion v{baseline.version}'}")
    if baseline is not None and baseline.stage_only and cfg.promotion == "alias" and "promotion" not in cfg.configured:
        # a registry from before deploygate: the first deploy keeps the Production stage in step
        # with the alias, for whatever still reads the stage (set promotion to choose otherwise)
        cfg = replace(cfg, promotion="both")
        log.info("the production model v%s has no %r alias: this deploy moves the alias and the Production stage "
                 "(promotion: both)", baseline.version, cfg.champion_alias)
    if baseline is None:
        log.info("no baseline: %s has no %s yet", cfg.registry_name,
                 f"alias {cfg.champion_alias!r}" if cfg.baseline == "champion" else "past gate runs")
    else:
        log.info("baseline (%s) %s score %.6f", baseline.source,
                 f"v{baseline.version}" if baseline.version else baseline.run_id, baseline.score)
    champion_signature = MetricSignature.from_json(baseline.signature) if baseline and baseline.signature else None
    comparability, differences = check_comparable(cand.signature, champion_signature, allow=cfg.allow_incomparable)
    if comparability == "allowed":
        warnings.append("scored differently from the champion (allow-incomparable): " + "; ".join(differences))
        log.warning("%s", warnings[-1])
    significance = _significance(cfg, cand, baseline, registry, comparability, warnings)
    checks = check_guardrails(cand.metrics.values, baseline.metrics if baseline else None, cfg.guardrails or ())
    for check in checks:
        log.info("guardrail %s: %s", "ok" if check.passed else "BREACHED", check.describe())
    why_not = ""
    if ctx.is_pull_request:
        why_not = "pull request: verdict only, nothing is deployed from a PR"
    elif cfg.dry_run:
        why_not = "dry run: verdict only"
    policy = Policy(cfg.min_improvement_threshold, cfg.force_deploy, may_deploy=not why_not, why_not_deploy=why_not)
    decision = decide(score.score, baseline, policy, guardrails=checks, significance=significance)
    log.info("decision: %s (%s)", decision.verdict, decision.reason)
    for note in decision.notes:
        log.info("%s", note)

    resolved: ResolvedSource | None = None
    if decision.deploy:
        if cand.source is None:
            raise ModelSourceError(
                f"model-artifact-path: {cfg.model_artifact_path} does not exist and no model-uri was given, "
                "so there is nothing to register; point --model-artifact-path at the model location file"
            )
        resolved = registry.resolve_source(cand.source)  # reads: the files are there, not an empty folder
        if shipper is not None:
            shipper.preflight(cand, cfg)  # the adapter and base model: InputError before the first write

    # From here on, writes: the gate run first, so that every later failure is recorded on it.
    experiment_id = registry.experiment_id(cfg.experiment_name)
    run_id = registry.start_run(
        experiment_id, run_name=f"gate-{(ctx.git_sha or 'local')[:8]}", tags=_run_tags(cfg, ctx, cand)
    )
    run_url = registry.run_url(experiment_id, run_id)
    log.info("gate run %s%s", run_id, f" ({run_url})" if run_url else "")

    keys = _metric_keys(list(cand.metrics.values))
    metrics = {keys[k]: v for k, v in cand.metrics.values.items()}
    metrics.update({f"contribution_{keys[k]}": v for k, v in score.contributions.items()})
    metrics["weighted_score"] = score.score
    if baseline is not None:
        metrics["baseline_score"] = baseline.score
    if decision.improvement is not None:
        metrics["improvement"] = decision.improvement
    if decision.improvement_pct is not None:
        metrics["improvement_pct"] = decision.improvement_pct

    base_result = GateResult(
        status="skipped",
        config=cfg,
        context=ctx,
        metrics=cand.metrics,
        candidate=score,
        baseline=baseline,
        decision=decision,
        started_at=started,
        finished_at=started,
        mlflow_run_id=run_id,
        mlflow_run_url=run_url,
        mlflow_experiment_id=experiment_id,
        warnings=tuple(warnings),
        signature=cand.signature,
        comparability=comparability,
        signature_differences=tuple(differences),
    )
    result = base_result
    try:
        registry.log_run(
            run_id,
            params=cfg.public_params(),
            metrics=metrics,
            tags={
                "deploygate.decision": decision.verdict,
                "deploygate.rule": decision.rule,
                "deploygate.reason": decision.reason,
                TAG_SIGNATURE: cand.signature.to_json(),
                TAG_METRICS: json.dumps(dict(cand.metrics.values), sort_keys=True),
                "deploygate.comparability": comparability,
                **({"deploygate.guardrails": "; ".join(c.describe() for c in checks)} if checks else {}),
                **({"deploygate.skipped_checks": "; ".join(decision.skipped_checks)} if decision.skipped_checks else {}),
            },
        )
        if cand.stats is not None:
            _log_stats(registry, run_id, cand.stats)
        if decision.deploy:
            assert cand.source is not None
            assert resolved is not None

            def progress(done: GateResult) -> None:  # a later failure still reports the version and push
                nonlocal result
                result = done

            result = _deploy(cfg, ctx, cand, registry, shipper, clock, sleep, result, resolved, progress)
        elif decision.verdict != "skip":
            result = replace(result, status="verdict-only")
        history = registry.history(cfg.registry_name) if cfg.baseline == "champion" or result.deployed else []
        result = replace(result, history=_history_points(history, result))
        result = replace(result, finished_at=clock().isoformat())
        registry.log_run(
            run_id,
            params={},
            metrics={"deployed": 1.0 if result.deployed else 0.0},
            tags={"deploygate.status": result.status, "deploygate.deployed": str(result.deployed).lower()},
        )
        log.info("status: %s", result.status)
        files = write_outputs(result, buffer.getvalue())
        registry.log_artifacts(run_id, cfg.output_dir, "deployment")
        registry.end_run(run_id, "FINISHED")
        return replace(result, files=files)
    except DeployGateError as exc:
        _record_failure(registry, result, run_id, exc, clock, buffer)
        raise
    except Exception as exc:  # unexpected: still leave a trace, then let the shell show the traceback
        _record_failure(registry, result, run_id, exc, clock, buffer)
        raise


def _deploy(
    cfg: GateConfig,
    ctx: RunContext,
    cand: Candidate,
    registry: MlflowRegistry,
    shipper: Shipper | None,
    clock: Clock,
    sleep: Callable[[float], None],
    result: GateResult,
    resolved: ResolvedSource,
    progress: Callable[[GateResult], None],
) -> GateResult:
    source = cand.source
    assert source is not None and result.mlflow_run_id is not None
    run_id = result.mlflow_run_id
    key = source.candidate_key(ctx.git_sha)
    version = registry.find_version(cfg.registry_name, key)
    if version is not None:
        log.info("candidate already registered as v%s (same source and git sha): reusing it", version)
    else:
        source_uri, source_run, model_id = resolved.uri, resolved.run_id, resolved.model_id
        if source_uri is None:
            assert source.local_path is not None
            log.info("logging %s to the gate run as the candidate model", source.local_path)
            registry.log_artifacts(run_id, source.local_path, "candidate_model")
            source_uri, source_run = f"{registry.artifact_uri(run_id).rstrip('/')}/candidate_model", run_id
        tags = {
            TAG_SCORE: repr(result.candidate.score),
            TAG_CANDIDATE: key,
            TAG_GATE_RUN: run_id,
            TAG_SIGNATURE: cand.signature.to_json(),
            "deploygate.decision": result.decision.verdict,
            # All metrics, under their own names, as one JSON tag (names may hold any character);
            # one tag per metric too, for reading in the MLflow UI.
            TAG_METRICS: json.dumps(dict(cand.metrics.values), sort_keys=True),
            **{f"{TAG_METRIC}{mkey}": repr(cand.metrics.values[name]) for name, mkey in _metric_keys(list(cand.metrics.values)).items()},
            # what the version's model card states, as decided now: a re-run renders the same card
            TAG_REASON: result.decision.reason[:1000],
            TAG_BASELINE: baseline_json(
                result.baseline.version if result.baseline else None, result.baseline.score if result.baseline else None,
                result.baseline.metrics if result.baseline else {}, limit=MAX_VERSION_TAG),
        }
        if ctx.git_sha:
            tags[TAG_GIT_SHA] = ctx.git_sha
        if source.run_id:
            tags["deploygate.source_run_id"] = source.run_id
        if model_id:
            tags["deploygate.source_model_id"] = model_id
        description = (
            f"Weighted score {result.candidate.score:.4f}. {result.decision.reason}. "
            f"Registered by deploygate {__version__} (gate run {run_id})."
        )
        version = registry.register(
            cfg.registry_name, source_uri=source_uri, run_id=source_run, tags=tags, description=description,
            model_id=model_id,
        )
        log.info("registered %s v%s from %s", cfg.registry_name, version, source_uri)
    version_url = registry.version_url(cfg.registry_name, version)
    result = replace(result, registered_version=version, model_version_url=version_url)
    progress(result)
    registry.set_tags(run_id, {"deploygate.registered_version": version})

    hub: HubPush | None = None
    if shipper is not None:
        try:
            hub = shipper.ship(ShipRequest(
                config=cfg,
                context=ctx,
                candidate=cand,
                version=version,
                score=result.candidate.score,
                baseline=result.baseline,
                reason=result.decision.reason,
                verdict=result.decision.verdict,
                mlflow_run_url=result.mlflow_run_url,
                model_version_url=version_url,
                created_at=clock().isoformat(),
                mlflow_run_id=run_id,
            ))
        except Exception:
            # The push may have reached main before failing (the tag call refused, say): main goes
            # back to the champion now, not whenever a later run happens to deploy.
            _sync_hub(cfg, registry, shipper, fallback=result.baseline.version if result.baseline else None,
                      why=f"the push of v{version} failed")
            raise
        if cfg.hf_export_dir is not None:
            result = replace(result, hub_export_dir=Path(cfg.hf_export_dir).resolve())
        if hub is not None:
            result = replace(result, hub=hub)
            progress(result)
    elif cfg.skip_hf_push:
        log.info("Hugging Face push skipped (skip-hf-push): nothing built or pushed")

    me = Me(version=version, score=result.candidate.score, forced=result.decision.verdict == "forced",
            baseline_version=result.baseline.version if result.baseline else None)
    promoting = False
    try:
        if hub is not None:
            registry.set_version_tags(cfg.registry_name, version, {TAG_HUB_COMMIT: hub.sha, TAG_HUB_URL: hub.url})
            registry.set_tags(run_id, {TAG_HUB_COMMIT: hub.sha, TAG_HUB_URL: hub.url})
        if me.forced:
            registry.set_version_tags(cfg.registry_name, version, {TAG_OVERRIDE: "forced"})
        promoting = True
        winner = _promote(cfg, registry, me, sleep)
    except Exception:
        # The Hub's main already holds this candidate but the alias may not: put main back to
        # whoever holds the alias (the champion we compared with, if MLflow cannot even say).
        if hub is not None:
            _sync_hub(cfg, registry, shipper, fallback=None if promoting else me.baseline_version,
                      why=f"v{version} was pushed but could not be promoted")
        raise
    if hub is not None:  # concurrent runs may have pushed after the alias settled: main follows the alias
        _sync_hub(cfg, registry, shipper, fallback=None, why="the Hub's main follows the champion alias")
    if winner is not None:
        note = f"superseded: v{winner} (at least as good, or a forced deploy / rollback) was promoted concurrently"
        log.warning("%s", note)
        registry.set_tags(run_id, {"deploygate.superseded_by": winner})
        return replace(result, status="superseded", warnings=(*result.warnings, note))
    if result.baseline is not None and result.baseline.stage_only and result.baseline.version != version:
        # the adopted production model enters the history first, so a rollback can go back to it
        registry.append_history(cfg.registry_name, {
            "version": result.baseline.version, "score": result.baseline.score, "at": clock().isoformat(),
            "adopted": True, "origin": result.baseline.origin,
        })
    registry.append_history(
        cfg.registry_name,
        {
            "version": version,
            "score": result.candidate.score,
            "at": clock().isoformat(),
            "run_id": run_id,
            "git_sha": ctx.git_sha,
            "forced": me.forced,
            "hf_commit": hub.sha if hub else None,
        },
    )
    log.info(
        "promoted %s v%s to %s (%s); previous: %s",
        cfg.registry_name, version, cfg.champion_alias, cfg.promotion,
        f"v{me.baseline_version}" if me.baseline_version else "none",
    )
    return replace(result, status="deployed")


# The promotion protocol's checks after the alias move: how many, and the jittered wait before each.
SETTLE_CHECKS = 3
SETTLE_WAIT = (0.15, 0.4)


def _promote(cfg: GateConfig, registry: MlflowRegistry, me: Me, sleep: Callable[[float], None]) -> str | None:
    """Move the champion to `me` unless a better or overriding candidate got there first, then
    check a few times that a worse concurrent run did not overwrite it. Returns the version that
    won instead of `me`, or None when `me` holds the champion."""
    by_stage = cfg.promotion == "stage"
    name, alias = cfg.registry_name, cfg.champion_alias
    seen = registry.holder(name, alias, by_stage=by_stage)
    if before_move(me, seen) == "yield":
        assert seen is not None
        return seen.version
    registry.set_champion(name, me.version, alias=alias, promotion=cfg.promotion)
    rng = random.Random(f"{name}:{me.version}")
    for _ in range(SETTLE_CHECKS):
        sleep(rng.uniform(*SETTLE_WAIT))
        seen = registry.holder(name, alias, by_stage=by_stage)
        verdict = after_move(me, seen)
        if verdict == "superseded":
            assert seen is not None
            return seen.version
        if verdict == "reclaim":
            log.warning("v%s took the champion alias from v%s (a worse concurrent run); taking it back",
                        seen.version if seen else "?", me.version)
            registry.set_champion(name, me.version, alias=alias, promotion=cfg.promotion)
    return None


STATS_ARTIFACT = "evaluation/example_stats.json"


def _log_stats(registry: MlflowRegistry, run_id: str, stats: ExampleStats) -> None:
    """Keep the per-example statistics with the run, so a later gate run can test against them."""
    import tempfile

    from deploygate.core.evaluation import stats_to_json

    with tempfile.TemporaryDirectory(prefix="deploygate-stats-") as tmp:
        Path(tmp, "example_stats.json").write_text(stats_to_json(stats), encoding="utf-8")
        registry.log_artifacts(run_id, Path(tmp), STATS_ARTIFACT.rsplit("/", 1)[0])


def _significance(
    cfg: GateConfig,
    cand: Candidate,
    baseline: Baseline | None,
    registry: MlflowRegistry,
    comparability: str,
    warnings: list[str],
) -> Significance | None:
    """The paired bootstrap, when both sides have per-example statistics on the same references."""
    if cand.stats is None or baseline is None or cfg.bootstrap_resamples == 0:
        if baseline is not None and cfg.bootstrap_resamples:
            log.info("significance: no per-example statistics for the candidate (give --predictions): point rule")
        return None
    text = registry.read_artifact(baseline.run_id, STATS_ARTIFACT) if baseline.run_id else None
    if text is None:
        log.info("significance: the champion has no per-example statistics: point rule")
        return None
    from deploygate.core.evaluation import paired_bootstrap, stats_from_json

    champion_stats = stats_from_json(text, source=f"champion run {baseline.run_id} {STATS_ARTIFACT}")
    same_refs = champion_stats.references_sha256 == cand.stats.references_sha256 and champion_stats.n == cand.stats.n
    if not same_refs and comparability == "allowed":
        warnings.append("significance not tested: the champion was evaluated on other references")
        return None
    # On other references (and not allowed) paired_bootstrap raises IncomparableError naming the difference.
    boot = paired_bootstrap(
        cand.stats, champion_stats, cfg.weights.values, threshold=cfg.min_improvement_threshold,
        resamples=cfg.bootstrap_resamples, seed=0, confidence=cfg.confidence,
    )
    log.info(
        "significance: difference %+.4f, %.0f%% lower bound %+.4f, interval [%+.4f, %+.4f], p = %.4f (%d resamples)",
        boot.observed_difference, 100 * boot.confidence, boot.lower_bound, *boot.interval, boot.p_value, boot.resamples,
    )
    return Significance(
        observed=boot.observed_difference, lower_bound=boot.lower_bound, interval=boot.interval,
        p_value=boot.p_value, confidence=boot.confidence, resamples=boot.resamples, significant=boot.significant,
    )


class HubSync(Protocol):
    def sync(self, config: GateConfig, version: str, why: str) -> HubPush | None: ...


def _sync_hub(cfg: GateConfig, registry: MlflowRegistry, shipper: HubSync | None, *, fallback: str | None,
              why: str) -> None:
    """Make the Hub's main hold the files of the version holding the champion alias; re-read the
    holder after each sync until it stops changing (bounded). Never raises: a failure here is
    logged and repaired by the next run of the same command."""
    if shipper is None:
        return
    sync = shipper.sync
    synced: str | None = None
    for _ in range(3):
        try:
            holder = registry.holder(cfg.registry_name, cfg.champion_alias, by_stage=cfg.promotion == "stage")
            version = holder.version if holder is not None else None
        except Exception:
            version = fallback
        if version is None or version == synced:
            return
        try:
            sync(cfg, version, why)
        except Exception as exc:
            log.warning("could not make the Hub's main hold v%s (%s); re-run the same command to repair it",
                        version, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        synced = version


def _history_points(entries: list[dict[str, Any]], result: GateResult) -> tuple[HistoryPoint, ...]:
    points: list[HistoryPoint] = []
    for entry in entries[-20:]:
        try:
            points.append(HistoryPoint(version=str(entry["version"]), score=float(entry["score"]),
                                       current=str(entry["version"]) == result.registered_version))
        except (KeyError, TypeError, ValueError):
            continue
    if not any(p.current for p in points):
        points.append(HistoryPoint(version="candidate", score=result.candidate.score, current=True))
    return tuple(points)


def _record_failure(
    registry: MlflowRegistry,
    result: GateResult,
    run_id: str,
    exc: BaseException,
    clock: Clock,
    buffer: io.StringIO,
) -> None:
    message = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    log.error("failed: %s", message)
    failed = replace(result, status="failed", error=message, finished_at=clock().isoformat())
    with contextlib.suppress(Exception):
        write_outputs(failed, buffer.getvalue())
    with contextlib.suppress(Exception):
        registry.set_tags(run_id, {"deploygate.status": "failed", "deploygate.error": message[:4000]})
        registry.log_artifacts(run_id, result.config.output_dir, "deployment")
    with contextlib.suppress(Exception):
        registry.end_run(run_id, "FAILED")
