"""One gate run, in order: assess -> decide -> carry out -> record.

The only place that orders the steps. It gets its adapters passed in (`registry`, `shipper`,
`files`: the ports), so tests can hand it real servers or the in-memory fakes of tests/fakes.py.
Order matters for safety:
  1. everything the user gave is checked before the first write (bad input writes nothing);
  2. a version is registered before the Hub push (the Hub tag names it), but the champion alias
     moves only after the push succeeded: a failure leaves the old champion in place;
  3. a re-run of the same candidate (same source, same git sha) reuses its version;
  4. from the gate run's start on, every failure is recorded on it and in the result files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploygate import __version__
from deploygate.core import records
from deploygate.core.decision import (
    Baseline,
    Decision,
    GuardrailCheck,
    Significance,
    check_guardrails,
    decide,
    policy_for,
)
from deploygate.core.errors import ModelSourceError, first_line
from deploygate.core.metrics import WeightedScore, weighted_score
from deploygate.core.model import (
    Candidate,
    GateResult,
    HistoryPoint,
    HubPush,
    ResolvedSource,
    RunContext,
    ShipRequest,
)
from deploygate.core.promotion import Me, after_move, before_move
from deploygate.core.provenance import baseline_json
from deploygate.core.redact import redact
from deploygate.core.settings import GateConfig
from deploygate.core.signature import MetricSignature, check_comparable
from deploygate.ports import Clock, Registry, ResultWriter, Shipper, Sleep
from deploygate.service.hub_sync import main_follows_champion
from deploygate.service.run_log import capture_log

log = logging.getLogger("deploygate")

# The promotion protocol's checks after the alias move: how many, and the jittered wait before each.
SETTLE_CHECKS = 3
SETTLE_WAIT = (0.15, 0.4)
HISTORY_POINTS = 20  # past promotions the report's trend chart gets


@dataclass(frozen=True)
class Ports:
    """What one run is handed: the outside world, behind the ports."""

    registry: Registry
    shipper: Shipper | None
    files: ResultWriter
    clock: Clock
    sleep: Sleep


@dataclass(frozen=True)
class Assessment:
    """What the reads found and what was decided, before anything is written."""

    config: GateConfig  # as given, or with promotion "both" for a registry from before deploygate
    score: WeightedScore
    baseline: Baseline | None
    comparability: str
    differences: tuple[str, ...]
    checks: tuple[GuardrailCheck, ...]
    decision: Decision
    warnings: tuple[str, ...]


class _Progress:
    """The result as far as the run got: a failure after registering still reports the version."""

    def __init__(self, result: GateResult) -> None:
        self.result = result

    def __call__(self, result: GateResult) -> GateResult:
        self.result = result
        return result


def run(
    cfg: GateConfig,
    ctx: RunContext,
    cand: Candidate,
    *,
    registry: Registry,
    files: ResultWriter,
    shipper: Shipper | None = None,
    clock: Clock,
    sleep: Sleep = time.sleep,
) -> GateResult:
    """Run the gate once. Raises DeployGateError subclasses; the result files are written anyway."""
    ports = Ports(registry=registry, shipper=shipper, files=files, clock=clock, sleep=sleep)
    with capture_log() as buffer:
        try:
            return _run(cfg, ctx, cand, ports, buffer)
        finally:
            if shipper is not None:
                shipper.close()


def _run(cfg: GateConfig, ctx: RunContext, cand: Candidate, ports: Ports, buffer: io.StringIO) -> GateResult:
    started = ports.clock().isoformat()
    found = assess(cfg, ctx, cand, ports.registry)  # reads only
    resolved = _preflight(found, cand, ports)  # reads only: bad input fails here, before the first write
    progress = _Progress(_open_gate_run(found, ctx, cand, ports.registry, started))
    try:
        _record_decision(found, cand, ports.registry, progress.result)
        if found.decision.deploy:
            assert resolved is not None
            progress(_deploy(found.config, ctx, cand, ports, progress.result, resolved, progress))
        elif found.decision.verdict != "skip":
            progress(replace(progress.result, status="verdict-only"))
        return _record_outcome(progress, ports, buffer)
    except Exception as exc:  # expected or not: leave a trace, then let the shell show it
        _record_failure(ports, progress.result, exc, buffer)
        raise


# --- assess and decide: reads only -----------------------------------------------------------------


def assess(cfg: GateConfig, ctx: RunContext, cand: Candidate, registry: Registry) -> Assessment:
    """Score the candidate, find the baseline, run the checks and decide. Writes nothing."""
    warnings = list(cfg.warnings)
    for note in (*cfg.warnings, *cand.metrics.notes):
        log.info("%s", note)
    score = weighted_score(cand.metrics, cfg.weights)
    log.info(
        "candidate weighted score %.6f (%s)",
        score.score,
        ", ".join(f"{k} {v:.4f} x {cfg.weights.values[k]:.3f}" for k, v in cand.metrics.values.items()),
    )
    baseline = _baseline(cfg, registry)
    cfg = _promotion_for(cfg, baseline)
    champion_signature = (
        MetricSignature.from_json(baseline.signature) if baseline and baseline.signature else None
    )
    comparability, differences = check_comparable(
        cand.signature, champion_signature, allow=cfg.allow_incomparable
    )
    if comparability == "allowed":
        warnings.append(
            "scored differently from the champion (allow-incomparable): " + "; ".join(differences)
        )
        log.warning("%s", warnings[-1])
    significance = _significance(cfg, cand, baseline, registry, comparability, warnings)
    checks = check_guardrails(
        cand.metrics.values, baseline.metrics if baseline else None, cfg.guardrails or ()
    )
    for check in checks:
        log.info("guardrail %s: %s", "ok" if check.passed else "BREACHED", check.describe())
    policy = policy_for(
        cfg.min_improvement_threshold,
        force=cfg.force_deploy,
        pull_request=ctx.is_pull_request,
        dry_run=cfg.dry_run,
    )
    decision = decide(score.score, baseline, policy, guardrails=checks, significance=significance)
    log.info("decision: %s (%s)", decision.verdict, decision.reason)
    for note in decision.notes:
        log.info("%s", note)
    return Assessment(
        config=cfg,
        score=score,
        baseline=baseline,
        comparability=comparability,
        differences=tuple(differences),
        checks=tuple(checks),
        decision=decision,
        warnings=tuple(warnings),
    )


def _baseline(cfg: GateConfig, registry: Registry) -> Baseline | None:
    """The score to beat: the champion's, or the best past gate run's (never "first model" while
    the registry has a production model)."""
    by_stage = cfg.promotion == "stage"

    def champion() -> Baseline | None:
        return registry.champion_baseline(
            cfg.registry_name,
            cfg.champion_alias,
            by_stage=by_stage,
            weights=cfg.weights,
            scale=cfg.metrics_scale,
        )

    if cfg.baseline == "champion":
        baseline = champion()
    else:
        baseline = registry.best_ever_baseline(cfg.experiment_name)
        if baseline is None and (baseline := champion()) is not None:
            baseline = replace(
                baseline,
                origin=f"no past gate run in {cfg.experiment_name!r}; "
                f"{baseline.origin or f'the champion v{baseline.version}'}",
            )
    if baseline is None:
        log.info(
            "no baseline: %s has no %s yet",
            cfg.registry_name,
            f"alias {cfg.champion_alias!r}" if cfg.baseline == "champion" else "past gate runs",
        )
    else:
        log.info(
            "baseline (%s) %s score %.6f",
            baseline.source,
            f"v{baseline.version}" if baseline.version else baseline.run_id,
            baseline.score,
        )
    return baseline


def _promotion_for(cfg: GateConfig, baseline: Baseline | None) -> GateConfig:
    """A registry from before deploygate: the first deploy keeps the Production stage in step with
    the alias, for whatever still reads the stage (set promotion to choose otherwise)."""
    if (
        baseline is None
        or not baseline.stage_only
        or cfg.promotion != "alias"
        or "promotion" in cfg.configured
    ):
        return cfg
    log.info(
        "the production model v%s has no %r alias: this deploy moves the alias and the Production stage "
        "(promotion: both)",
        baseline.version,
        cfg.champion_alias,
    )
    return replace(cfg, promotion="both")


def _significance(
    cfg: GateConfig,
    cand: Candidate,
    baseline: Baseline | None,
    registry: Registry,
    comparability: str,
    warnings: list[str],
) -> Significance | None:
    """The paired bootstrap, when both sides have per-example statistics on the same references."""
    if cand.stats is None or baseline is None or cfg.bootstrap_resamples == 0:
        if baseline is not None and cfg.bootstrap_resamples:
            log.info(
                "significance: no per-example statistics for the candidate (give --predictions): point rule"
            )
        return None
    text = registry.read_artifact(baseline.run_id, records.STATS_ARTIFACT) if baseline.run_id else None
    if text is None:
        log.info("significance: the champion has no per-example statistics: point rule")
        return None
    from deploygate.core.evaluation import paired_bootstrap, stats_from_json

    champion_stats = stats_from_json(text, source=f"champion run {baseline.run_id} {records.STATS_ARTIFACT}")
    same_refs = (
        champion_stats.references_sha256 == cand.stats.references_sha256 and champion_stats.n == cand.stats.n
    )
    if not same_refs and comparability == "allowed":
        warnings.append("significance not tested: the champion was evaluated on other references")
        return None
    # On other references (and not allowed) paired_bootstrap raises IncomparableError naming the difference.
    boot = paired_bootstrap(
        cand.stats,
        champion_stats,
        cfg.weights.values,
        threshold=cfg.min_improvement_threshold,
        resamples=cfg.bootstrap_resamples,
        seed=0,
        confidence=cfg.confidence,
    )
    log.info(
        "significance: difference %+.4f, %.0f%% lower bound %+.4f, interval [%+.4f, %+.4f], p = %.4f (%d resamples)",
        boot.observed_difference,
        100 * boot.confidence,
        boot.lower_bound,
        *boot.interval,
        boot.p_value,
        boot.resamples,
    )
    return Significance(
        observed=boot.observed_difference,
        lower_bound=boot.lower_bound,
        interval=boot.interval,
        p_value=boot.p_value,
        confidence=boot.confidence,
        resamples=boot.resamples,
        significant=boot.significant,
    )


def _preflight(found: Assessment, cand: Candidate, ports: Ports) -> ResolvedSource | None:
    """For a deploy: the candidate's files are there, and the Hub stage can use them. Reads only."""
    if not found.decision.deploy:
        return None
    if cand.source is None:
        raise ModelSourceError(
            f"model-artifact-path: {found.config.model_artifact_path} does not exist and no model-uri was given, "
            "so there is nothing to register; point --model-artifact-path at the model location file"
        )
    resolved = ports.registry.resolve_source(cand.source)  # reads: the files are there, not an empty folder
    if ports.shipper is not None:
        ports.shipper.preflight(
            cand, found.config
        )  # the adapter and base model: InputError before the first write
    return resolved


# --- record: the gate run, from its first write to its end ---------------------------------------


def _open_gate_run(
    found: Assessment, ctx: RunContext, cand: Candidate, registry: Registry, started: str
) -> GateResult:
    """The first write: the gate run, so that every later failure is recorded on it."""
    cfg = found.config
    experiment_id = registry.experiment_id(cfg.experiment_name)
    run_id = registry.start_run(
        experiment_id,
        run_name=f"gate-{(ctx.git_sha or 'local')[:8]}",
        tags=records.gate_run_tags(cfg, ctx, cand.source),
    )
    run_url = registry.run_url(experiment_id, run_id)
    log.info("gate run %s%s", run_id, f" ({run_url})" if run_url else "")
    return GateResult(
        status="skipped",
        config=cfg,
        context=ctx,
        metrics=cand.metrics,
        candidate=found.score,
        baseline=found.baseline,
        decision=found.decision,
        started_at=started,
        finished_at=started,
        mlflow_run_id=run_id,
        mlflow_run_url=run_url,
        mlflow_experiment_id=experiment_id,
        warnings=found.warnings,
        signature=cand.signature,
        comparability=found.comparability,
        signature_differences=found.differences,
    )


def _record_decision(found: Assessment, cand: Candidate, registry: Registry, result: GateResult) -> None:
    run_id = _run_id(result)
    registry.log_run(
        run_id,
        params=found.config.public_params(),
        metrics=records.gate_run_metrics(
            cand.metrics, found.score.contributions, found.score.score, found.baseline, found.decision
        ),
        tags=records.decision_tags(
            found.decision, cand.metrics, cand.signature, found.comparability, found.checks
        ),
    )
    if cand.stats is not None:  # kept with the run, so a later gate run can test against them
        from deploygate.core.evaluation import stats_to_json

        folder, name = records.STATS_ARTIFACT.rsplit("/", 1)
        with tempfile.TemporaryDirectory(prefix="deploygate-stats-") as tmp:
            Path(tmp, name).write_text(stats_to_json(cand.stats), encoding="utf-8")
            registry.log_artifacts(run_id, Path(tmp), folder)


def _record_outcome(progress: _Progress, ports: Ports, buffer: io.StringIO) -> GateResult:
    """The end of a run that did not fail: status, trend, result files, artifacts."""
    result = progress.result
    cfg, registry, run_id = result.config, ports.registry, _run_id(result)
    history = registry.history(cfg.registry_name) if cfg.baseline == "champion" or result.deployed else []
    result = progress(
        replace(result, history=_history_points(history, result), finished_at=ports.clock().isoformat())
    )
    registry.log_run(
        run_id,
        params={},
        metrics={records.METRIC_DEPLOYED: 1.0 if result.deployed else 0.0},
        tags=records.status_tags(result.status, result.deployed),
    )
    log.info("status: %s", result.status)
    files = ports.files.write(result, buffer.getvalue())
    registry.log_artifacts(run_id, cfg.output_dir, records.RESULT_ARTIFACTS)
    registry.end_run(run_id, "FINISHED")
    return replace(result, files=files)


def _record_failure(ports: Ports, result: GateResult, exc: BaseException, buffer: io.StringIO) -> None:
    """A failed run still leaves its files and a FAILED gate run naming the error; never raises."""
    message = redact(first_line(exc))
    log.error("failed: %s", message)
    failed = replace(result, status="failed", error=message, finished_at=ports.clock().isoformat())
    run_id = _run_id(result)
    with contextlib.suppress(Exception):
        ports.files.write(failed, buffer.getvalue())
    with contextlib.suppress(Exception):
        ports.registry.set_tags(run_id, records.failure_tags(message))
        ports.registry.log_artifacts(run_id, result.config.output_dir, records.RESULT_ARTIFACTS)
    with contextlib.suppress(Exception):
        ports.registry.end_run(run_id, "FAILED")


def _run_id(result: GateResult) -> str:
    assert result.mlflow_run_id is not None
    return result.mlflow_run_id


def _history_points(entries: list[dict[str, Any]], result: GateResult) -> tuple[HistoryPoint, ...]:
    points: list[HistoryPoint] = []
    for entry in entries[-HISTORY_POINTS:]:
        try:
            points.append(
                HistoryPoint(
                    version=str(entry["version"]),
                    score=float(entry["score"]),
                    current=str(entry["version"]) == result.registered_version,
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    if not any(p.current for p in points):
        points.append(HistoryPoint(version="candidate", score=result.candidate.score, current=True))
    return tuple(points)


# --- carry out: register -> push -> promote ----------------------------------------------------------


def _deploy(
    cfg: GateConfig,
    ctx: RunContext,
    cand: Candidate,
    ports: Ports,
    result: GateResult,
    resolved: ResolvedSource,
    progress: _Progress,
) -> GateResult:
    """Register (or reuse) the version, push it to the Hub, then move the champion alias."""
    version = _register(cfg, ctx, cand, ports.registry, result, resolved)
    result = progress(
        replace(
            result,
            registered_version=version,
            model_version_url=ports.registry.version_url(cfg.registry_name, version),
        )
    )
    ports.registry.set_tags(_run_id(result), {records.TAG_REGISTERED_VERSION: version})
    hub = _push(cfg, cand, ports, result, version)
    if cfg.hf_export_dir is not None and ports.shipper is not None:
        result = replace(result, hub_export_dir=Path(cfg.hf_export_dir).resolve())
    if hub is not None:
        result = progress(replace(result, hub=hub))
    elif ports.shipper is None and cfg.skip_hf_push:
        log.info("Hugging Face push skipped (skip-hf-push): nothing built or pushed")
    me = Me(
        version=version,
        score=result.candidate.score,
        forced=result.decision.verdict == "forced",
        baseline_version=result.baseline.version if result.baseline else None,
    )
    winner = _promote_pushed(cfg, ports, result, me, hub)
    if winner is not None:
        note = f"superseded: v{winner} (at least as good, or a forced deploy / rollback) was promoted concurrently"
        log.warning("%s", note)
        ports.registry.set_tags(_run_id(result), {records.TAG_SUPERSEDED_BY: winner})
        return replace(result, status="superseded", warnings=(*result.warnings, note))
    _append_history(cfg, ctx, ports, result, me, hub)
    log.info(
        "promoted %s v%s to %s (%s); previous: %s",
        cfg.registry_name,
        version,
        cfg.champion_alias,
        cfg.promotion,
        f"v{me.baseline_version}" if me.baseline_version else "none",
    )
    return replace(result, status="deployed")


def _register(
    cfg: GateConfig,
    ctx: RunContext,
    cand: Candidate,
    registry: Registry,
    result: GateResult,
    resolved: ResolvedSource,
) -> str:
    """The candidate's version: the one a previous run of the same candidate registered, or a new one."""
    source, run_id = cand.source, _run_id(result)
    assert source is not None
    key = source.candidate_key(ctx.git_sha)
    version = registry.find_version(cfg.registry_name, key)
    if version is not None:
        log.info("candidate already registered as v%s (same source and git sha): reusing it", version)
        return version
    source_uri, source_run, model_id = resolved.uri, resolved.run_id, resolved.model_id
    if source_uri is None:
        assert source.local_path is not None
        log.info("logging %s to the gate run as the candidate model", source.local_path)
        registry.log_artifacts(run_id, source.local_path, records.CANDIDATE_ARTIFACTS)
        source_uri = f"{registry.artifact_uri(run_id).rstrip('/')}/{records.CANDIDATE_ARTIFACTS}"
        source_run = run_id
    baseline = result.baseline
    tags = records.version_tags(
        score=result.candidate.score,
        candidate_key=key,
        gate_run_id=run_id,
        signature=cand.signature,
        verdict=result.decision.verdict,
        metrics=cand.metrics,
        reason=result.decision.reason,
        # what the version's model card states, as decided now: a re-run renders the same card
        baseline=baseline_json(
            baseline.version if baseline else None,
            baseline.score if baseline else None,
            baseline.metrics if baseline else {},
            limit=records.MAX_VERSION_TAG,
        ),
        git_sha=ctx.git_sha,
        source_run_id=source.run_id,
        model_id=model_id,
    )
    description = (
        f"Weighted score {result.candidate.score:.4f}. {result.decision.reason}. "
        f"Registered by deploygate {__version__} (gate run {run_id})."
    )
    version = registry.register(
        cfg.registry_name,
        source_uri=source_uri,
        run_id=source_run,
        tags=tags,
        description=description,
        model_id=model_id,
    )
    log.info("registered %s v%s from %s", cfg.registry_name, version, source_uri)
    return version


def _push(cfg: GateConfig, cand: Candidate, ports: Ports, result: GateResult, version: str) -> HubPush | None:
    """The Hub stage, after the version exists (its tag names it) and before any alias moves."""
    if ports.shipper is None:
        return None
    request = ShipRequest(
        config=cfg,
        context=result.context,
        candidate=cand,
        version=version,
        score=result.candidate.score,
        baseline=result.baseline,
        reason=result.decision.reason,
        verdict=result.decision.verdict,
        mlflow_run_url=result.mlflow_run_url,
        model_version_url=result.model_version_url,
        created_at=ports.clock().isoformat(),
        mlflow_run_id=result.mlflow_run_id,
        result=result,
    )
    try:
        return ports.shipper.ship(request)
    except Exception:
        # The push may have reached main before failing (the tag call refused, say): main goes
        # back to the champion now, not whenever a later run happens to deploy.
        main_follows_champion(
            cfg,
            ports.registry,
            ports.shipper,
            fallback=result.baseline.version if result.baseline else None,
            why=f"the push of v{version} failed",
        )
        raise


def _promote_pushed(
    cfg: GateConfig, ports: Ports, result: GateResult, me: Me, hub: HubPush | None
) -> str | None:
    """Record the push on the version, move the alias; the Hub's main follows whoever holds it."""
    registry, promoting = ports.registry, False
    try:
        if hub is not None:
            registry.set_version_tags(
                cfg.registry_name,
                me.version,
                {
                    **records.hub_tags(hub.sha, hub.url),
                    **records.signature_tags(hub.signature_sha256, hub.signing),
                },
            )
            registry.set_tags(_run_id(result), records.hub_tags(hub.sha, hub.url))
        if me.forced:
            registry.set_version_tags(cfg.registry_name, me.version, {records.TAG_OVERRIDE: "forced"})
        promoting = True
        winner = _promote(cfg, registry, me, ports.sleep)
    except Exception:
        # The Hub's main already holds this candidate but the alias may not: put main back to
        # whoever holds the alias (the champion we compared with, if MLflow cannot even say).
        if hub is not None:
            main_follows_champion(
                cfg,
                registry,
                ports.shipper,
                fallback=None if promoting else me.baseline_version,
                why=f"v{me.version} was pushed but could not be promoted",
            )
        raise
    if hub is not None:  # concurrent runs may have pushed after the alias settled: main follows the alias
        main_follows_champion(
            cfg, registry, ports.shipper, fallback=None, why="the Hub's main follows the champion alias"
        )
    return winner


def _promote(cfg: GateConfig, registry: Registry, me: Me, sleep: Sleep) -> str | None:
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
            log.warning(
                "v%s took the champion alias from v%s (a worse concurrent run); taking it back",
                seen.version if seen else "?",
                me.version,
            )
            registry.set_champion(name, me.version, alias=alias, promotion=cfg.promotion)
    return None


def _append_history(
    cfg: GateConfig, ctx: RunContext, ports: Ports, result: GateResult, me: Me, hub: HubPush | None
) -> None:
    baseline, now = result.baseline, ports.clock
    if baseline is not None and baseline.stage_only and baseline.version != me.version:
        # the adopted production model enters the history first, so a rollback can go back to it
        ports.registry.append_history(
            cfg.registry_name,
            {
                "version": baseline.version,
                "score": baseline.score,
                "at": now().isoformat(),
                "adopted": True,
                "origin": baseline.origin,
            },
        )
    ports.registry.append_history(
        cfg.registry_name,
        {
            "version": me.version,
            "score": result.candidate.score,
            "at": now().isoformat(),
            "run_id": result.mlflow_run_id,
            "git_sha": ctx.git_sha,
            "forced": me.forced,
            "hf_commit": hub.sha if hub else None,
        },
    )
