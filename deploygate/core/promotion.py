"""Promotion under concurrency, without compare-and-swap: what to do around the alias move.

MLflow cannot move an alias only if it still points where we last saw it, so two gate runs that
both beat the same champion could each move it, the worse one last. Each deploying run therefore
(1) re-reads the holder just before the move and yields if something at least as good, or a human
override (forced deploy, rollback), landed meanwhile; (2) after the move re-reads the holder a few
times and takes the alias back if a worse, non-override candidate overwrote it. Every run only ever
moves the alias to itself and only away from worse candidates, so concurrent runs converge on the
best of them. Pure: the pipeline does the reads, writes and waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Holder:
    """Who holds the champion alias (or stage) at one read."""

    version: str
    score: float | None
    override: bool = False  # promoted by a forced deploy or a rollback: a human's explicit choice


@dataclass(frozen=True)
class Me:
    version: str
    score: float
    forced: bool
    baseline_version: str | None  # the champion this run compared itself with


def before_move(me: Me, holder: Holder | None) -> Literal["move", "yield"]:
    if me.forced or holder is None or holder.version in (me.version, me.baseline_version):
        return "move"
    if holder.override:
        return "yield"
    if holder.score is not None and holder.score >= me.score:
        return "yield"
    return "move"


def after_move(me: Me, holder: Holder | None) -> Literal["hold", "reclaim", "superseded"]:
    if holder is None:
        return "reclaim"
    if holder.version == me.version:
        return "hold"
    if holder.override or holder.score is None or holder.score >= me.score:
        return "superseded"
    return "reclaim"
