"""Rollback: put the previous champion back, in the registry and on the Hub together.

Order: the Hub first (its `main` gets the files of the target's version tag in a new commit), then
the champion alias (and stage). A Hub failure leaves the alias where it was. The rollback is a run
in the gate's experiment (who, when, why, from, to) and an entry in the promotion history, so the
next gate run compares against the restored champion and a second rollback goes further back.
A deploy may be in flight meanwhile: like a deploy, the rollback re-reads the holder just before
its move (what it replaces is what it records), and after the move makes the Hub's main follow
whoever holds the alias (a deploy's push may have landed after the restore).
"""

from __future__ import annotations

import logging

from deploygate.core import records
from deploygate.core.errors import ConfigError
from deploygate.core.history import previous_champion
from deploygate.core.model import HubPush, RollbackResult, RunContext
from deploygate.core.settings import GateConfig
from deploygate.ports import Clock, Hub, Registry
from deploygate.service.hub_sync import main_follows_champion
from deploygate.service.run_log import capture_log

log = logging.getLogger("deploygate.rollback")


def rollback(
    cfg: GateConfig,
    ctx: RunContext,
    *,
    registry: Registry,
    hub: Hub | None,
    to: str | None,
    clock: Clock,
) -> RollbackResult:
    """Put `to` (default: the champion before the current one) back, the Hub first, then the alias."""
    with capture_log() as buffer:
        name = cfg.registry_name
        current, target = _target(cfg, registry, to)
        target_info = registry.version(name, target)
        who, why = ctx.actor or "unknown", ctx.reason or "no reason given"

        def entry(run_id: str, replaced: str, hf_commit: str | None) -> dict[str, object]:
            at = clock().isoformat()
            return records.rollback_entry(
                target, target_info.score, at, run_id, replaced, who, why, hf_commit
            )

        # Everything written later must fit MLflow's limits: refuse now, before the Hub or the alias moves.
        registry.check_history_entry(entry("0" * 32, current, "0" * 40))
        log.info("rolling back %s from v%s to v%s (by %s: %s)", name, current, target, who, why)
        pushed = _restore_hub(cfg, registry, hub, current, target, who, why)
        replaced = _replaced(cfg, registry, current, target)
        experiment_id = registry.experiment_id(cfg.experiment_name)
        run_id = registry.start_run(
            experiment_id,
            run_name=f"rollback-v{replaced}-to-v{target}",
            tags=records.rollback_run_tags(
                ctx, registry_name=name, replaced=replaced, target=target, actor=who, reason=why, hub=pushed
            ),
        )
        _move(cfg, registry, hub, target, run_id, entry(run_id, replaced, pushed.sha if pushed else None))
        if target_info.score is not None:
            registry.log_run(run_id, params={}, metrics={records.METRIC_SCORE: target_info.score}, tags={})
        registry.end_run(run_id, "FINISHED")
        log.info("champion of %s is v%s again", name, target)
        return RollbackResult(
            from_version=replaced,
            to_version=target,
            score=target_info.score,
            mlflow_run_id=run_id,
            mlflow_run_url=registry.run_url(experiment_id, run_id),
            hub=pushed,
            log_text=buffer.getvalue(),
        )


def _move(
    cfg: GateConfig, registry: Registry, hub: Hub | None, target: str, run_id: str, entry: dict[str, object]
) -> None:
    """The alias (and stage) to `target`, recorded in the history; the Hub's main follows."""
    try:
        registry.set_version_tags(cfg.registry_name, target, {records.TAG_OVERRIDE: "rollback"})
        registry.set_champion(cfg.registry_name, target, alias=cfg.champion_alias, promotion=cfg.promotion)
        registry.append_history(cfg.registry_name, entry)
    except Exception:
        registry.end_run(run_id, "FAILED")
        raise
    if hub is not None and cfg.hf_model_id:
        # like a deploy: the Hub's main follows the alias holder (a concurrent deploy pushed after our
        # restore, or moved the alias after our move)
        main_follows_champion(
            cfg, registry, _HubSync(hub), fallback=target, why="the Hub's main follows the champion alias"
        )


def _replaced(cfg: GateConfig, registry: Registry, current: str, target: str) -> str:
    """Who holds the alias just before the move. A deploy may have promoted another version since
    the first read: the rollback (a human's choice) still wins, and records what it replaced."""
    holder = registry.holder(cfg.registry_name, cfg.champion_alias, by_stage=cfg.promotion == "stage")
    replaced = holder.version if holder is not None else current
    if replaced != current:
        log.warning(
            "v%s was promoted while rolling back from v%s; the rollback replaces it with v%s",
            replaced,
            current,
            target,
        )
    return replaced


def _target(cfg: GateConfig, registry: Registry, to: str | None) -> tuple[str, str]:
    """(the champion now, the version to go back to): `to`, else the champion before it. Reads only."""
    name, alias = cfg.registry_name, cfg.champion_alias
    current = registry.champion(name, alias, by_stage=cfg.promotion == "stage")
    if current is None:
        raise ConfigError(
            f"rollback: model {name!r} has no champion ({alias!r}); there is nothing to roll back"
        )
    target = to or previous_champion(registry.history(name), current.version)
    if target is None:
        raise ConfigError(
            f"rollback: the promotion history of {name!r} has no champion before v{current.version}; "
            "name the version with --to VERSION"
        )
    if target == current.version:
        raise ConfigError(
            f"rollback: v{target} already is the champion of {name!r}; name another version with --to"
        )
    return current.version, target


def _restore_hub(
    cfg: GateConfig, registry: Registry, hub: Hub | None, current: str, target: str, who: str, why: str
) -> HubPush | None:
    """The Hub first: its main gets the files of the target's tag (a failure leaves the alias alone)."""
    if hub is None or not cfg.hf_model_id:
        return None
    # the tag must be this model's v<target>, not one a deleted or renamed model left (HubError)
    facts = registry.version_facts(cfg.registry_name, target)
    hub.tag_for(cfg.hf_model_id, f"v{target}", facts.identity, recorded_commit=facts.hub_commit)
    pushed = hub.restore_tag(
        cfg.hf_model_id,
        f"v{target}",
        commit_message=f"deploygate rollback: {cfg.registry_name} v{current} -> v{target} by {who}: {why}"[
            :300
        ],
    )
    log.info("Hub %s main now holds the files of v%s (%s)", cfg.hf_model_id, target, pushed.url)
    return pushed


class _HubSync:
    """The rollback's Hub publisher, as the one thing the deploy's Hub re-sync needs of a shipper."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def sync(self, config: GateConfig, version: str, why: str) -> HubPush | None:
        assert config.hf_model_id
        return self.hub.sync_main(
            config.hf_model_id,
            f"v{version}",
            commit_message=f"deploygate: restore {config.registry_name} v{version} ({why})",
        )
