"""Rollback: put the previous champion back, in the registry and on the Hub together.

Order: the Hub first (its `main` gets the files of the target's version tag in a new commit), then
the champion alias (and stage). A Hub failure leaves the alias where it was. The rollback is a run
in the gate's experiment (who, when, why, from, to) and an entry in the promotion history, so the
next gate run compares against the restored champion and a second rollback goes further back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from deploygate.config import GateConfig
from deploygate.errors import ConfigError
from deploygate.history import previous_champion
from deploygate.hub import HubPublisher
from deploygate.pipeline import Clock, capture_log
from deploygate.registry import TAG_HUB_COMMIT, TAG_HUB_URL, TAG_OVERRIDE, MlflowRegistry
from deploygate.result import HubPush, RunContext

log = logging.getLogger("deploygate.rollback")


@dataclass(frozen=True)
class RollbackResult:
    from_version: str
    to_version: str
    score: float | None
    mlflow_run_id: str
    mlflow_run_url: str | None
    hub: HubPush | None
    log_text: str


def rollback(
    cfg: GateConfig,
    ctx: RunContext,
    *,
    registry: MlflowRegistry,
    hub: HubPublisher | None,
    to: str | None,
    clock: Clock,
) -> RollbackResult:
    with capture_log() as buffer:
        result = _rollback(cfg, ctx, registry=registry, hub=hub, to=to, clock=clock)
        return RollbackResult(**{**result.__dict__, "log_text": buffer.getvalue()})


def _rollback(
    cfg: GateConfig, ctx: RunContext, *, registry: MlflowRegistry, hub: HubPublisher | None, to: str | None,
    clock: Clock,
) -> RollbackResult:
    name, alias = cfg.registry_name, cfg.champion_alias
    by_stage = cfg.promotion == "stage"
    current = registry.champion(name, alias, by_stage=by_stage)
    if current is None:
        raise ConfigError(f"rollback: model {name!r} has no champion ({alias!r}); there is nothing to roll back")
    history = registry.history(name)
    target = to or previous_champion(history, current.version)
    if target is None:
        raise ConfigError(
            f"rollback: the promotion history of {name!r} has no champion before v{current.version}; "
            "name the version with --to VERSION"
        )
    if target == current.version:
        raise ConfigError(f"rollback: v{target} already is the champion of {name!r}; name another version with --to")
    target_info = registry.version(name, target)
    who = ctx.actor or "unknown"
    why = ctx.reason or "no reason given"
    log.info("rolling back %s from v%s to v%s (by %s: %s)", name, current.version, target, who, why)

    pushed: HubPush | None = None
    if hub is not None and cfg.hf_model_id:
        # the tag must be this model's v<target>, not one a deleted or renamed model left (HubError)
        facts = registry.version_facts(name, target)
        hub.tag_for(cfg.hf_model_id, f"v{target}", facts.identity, recorded_commit=facts.hub_commit)
        pushed = hub.restore_tag(
            cfg.hf_model_id,
            f"v{target}",
            commit_message=f"deploygate rollback: {name} v{current.version} -> v{target} by {who}: {why}"[:300],
        )
        log.info("Hub %s main now holds the files of v%s (%s)", cfg.hf_model_id, target, pushed.url)

    experiment_id = registry.experiment_id(cfg.experiment_name)
    run_id = registry.start_run(
        experiment_id,
        run_name=f"rollback-v{current.version}-to-v{target}",
        tags={
            "deploygate.mode": "rollback",
            "deploygate.decision": "rollback",
            "deploygate.rollback_from": current.version,
            "deploygate.rollback_to": target,
            "deploygate.actor": who,
            "deploygate.reason": why,
            "deploygate.registry_name": name,
            **({"deploygate.git_sha": ctx.git_sha} if ctx.git_sha else {}),
            **({"deploygate.ci_run_url": ctx.ci_run_url} if ctx.ci_run_url else {}),
            **({TAG_HUB_COMMIT: pushed.sha, TAG_HUB_URL: pushed.url} if pushed else {}),
        },
    )
    try:
        registry.set_version_tags(name, target, {TAG_OVERRIDE: "rollback"})
        registry.set_champion(name, target, alias=alias, promotion=cfg.promotion)
        registry.append_history(
            name,
            {
                "version": target,
                "score": target_info.score,
                "at": clock().isoformat(),
                "run_id": run_id,
                "rollback_from": current.version,
                "actor": who,
                "reason": why,
                "hf_commit": pushed.sha if pushed else None,
            },
        )
    except Exception:
        registry.end_run(run_id, "FAILED")
        raise
    if target_info.score is not None:
        registry.log_run(run_id, params={}, metrics={"weighted_score": target_info.score}, tags={})
    registry.end_run(run_id, "FINISHED")
    log.info("champion of %s is v%s again", name, target)
    return RollbackResult(
        from_version=current.version,
        to_version=target,
        score=target_info.score,
        mlflow_run_id=run_id,
        mlflow_run_url=registry.run_url(experiment_id, run_id),
        hub=pushed,
        log_text="",
    )
