"""Adopt a registry from before deploygate: record a production version's score and give it the alias.

For a registered model whose production version carries no score deploygate can find (promoted by
hand, or by the seed's script on a run without metrics). `deploygate adopt --version N --score S`
writes S as that version's recorded score, moves the champion alias (and, with promotion stage or
both, the Production stage) to it and enters it in the promotion history; the next gate run
compares against it. It never takes the alias from another version: that is what rollback is for.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from deploygate.core.errors import ConfigError
from deploygate.core.model import RunContext
from deploygate.core.records import TAG_ADOPTED, TAG_SCORE
from deploygate.core.settings import GateConfig
from deploygate.ports import Clock, Registry

log = logging.getLogger("deploygate.adopt")


@dataclass(frozen=True)
class AdoptResult:
    version: str
    score: float
    previous_score: str | None  # what the version's own tags said, if anything


def parse_score(raw: str) -> float:
    try:
        score = float(raw)
    except ValueError:
        raise ConfigError(
            f"--score: {raw!r} is not a number; give the version's weighted score, e.g. 0.4912"
        ) from None
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ConfigError(f"--score: {raw!r} is not a weighted score from 0 to 1; give e.g. 0.4912")
    return score


def adopt(
    cfg: GateConfig, ctx: RunContext, *, registry: Registry, version: str, score: float, clock: Clock
) -> AdoptResult:
    name, alias = cfg.registry_name, cfg.champion_alias
    if not version.isdigit():
        raise ConfigError(f"--version: {version!r} is not a version number; give e.g. --version 3")
    try:
        target = registry.version(name, version)
    except ConfigError as exc:  # missing or not READY; its message names rollback's flag
        raise ConfigError(exc.message.replace("--to:", "--version:", 1), hint=exc.hint) from None
    holder = registry.champion(name, alias)
    if holder is not None and holder.version != version:
        raise ConfigError(
            f"adopt: alias {alias!r} of {name!r} is held by v{holder.version}, not v{version}; adopt only sets an "
            f"alias nobody holds: use `deploygate rollback --to {version}` to move it"
        )
    who = ctx.actor or "unknown"
    at = clock().isoformat()
    registry.set_version_tags(
        name,
        version,
        {
            TAG_SCORE: repr(score),
            TAG_ADOPTED: f"by {who} at {at}" + (f": {ctx.reason}" if ctx.reason else ""),
        },
    )
    registry.set_champion(name, version, alias=alias, promotion=cfg.promotion)
    registry.append_history(
        name,
        {"version": version, "score": score, "at": at, "adopted": True, "actor": who, "reason": ctx.reason},
    )
    log.info("adopted %s v%s as %s with score %.4f", name, version, alias, score)
    return AdoptResult(version=version, score=score, previous_score=target.tags.get("weighted_score"))
