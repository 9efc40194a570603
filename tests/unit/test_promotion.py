"""The promotion protocol's decisions, and a simulation of interleaved runs converging on the best."""

from __future__ import annotations

import random

import pytest

from deploygate.core.promotion import Holder, Me, after_move, before_move

ME = Me(version="5", score=0.30, forced=False, baseline_version="3")

BEFORE = [
    ("nobody holds it", None, "move"),
    ("still my baseline", Holder("3", 0.25), "move"),
    ("a better one landed", Holder("4", 0.35), "yield"),
    ("an equal one landed", Holder("4", 0.30), "yield"),
    ("a worse one landed", Holder("4", 0.28), "move"),
    ("a forced one landed", Holder("4", 0.10, override=True), "yield"),
    ("a score-less one landed", Holder("4", None), "move"),
]


@pytest.mark.parametrize(("holder", "expected"), [c[1:] for c in BEFORE], ids=[c[0] for c in BEFORE])
def test_before_move(holder, expected):
    assert before_move(ME, holder) == expected


AFTER = [
    ("still mine", Holder("5", 0.30), "hold"),
    ("overwritten by a worse one", Holder("4", 0.28), "reclaim"),
    ("overwritten by a better one", Holder("6", 0.40), "superseded"),
    ("overwritten by a rollback", Holder("2", 0.10, override=True), "superseded"),
    ("alias removed", None, "reclaim"),
]


@pytest.mark.parametrize(("holder", "expected"), [c[1:] for c in AFTER], ids=[c[0] for c in AFTER])
def test_after_move(holder, expected):
    assert after_move(ME, holder) == expected


def test_forced_moves_whatever_holds_it():
    forced = Me(version="9", score=0.01, forced=True, baseline_version="3")
    assert before_move(forced, Holder("4", 0.9)) == "move"


def simulate(scores: list[float], rng: random.Random, checks: int = 3) -> str:
    """Run N gate runs' protocol on a clock: each starts at a random time, writes a few ms after
    its pre-move read (a request round trip), then verifies `checks` times 150-400 ms apart (the
    pipeline's jittered waits). Returns who holds the alias at the end."""
    alias: list[str | None] = ["0"]
    score_of = {"0": 0.0} | {str(i + 1): s for i, s in enumerate(scores)}
    events: list[tuple[float, int, str]] = []
    for i in range(len(scores)):
        t = rng.uniform(0.0, 1.0)
        events.append((t, i, "read-before"))
        t += rng.uniform(0.005, 0.05)
        events.append((t, i, "write"))
        for _ in range(checks):
            t += rng.uniform(0.15, 0.4)
            events.append((t, i, "verify"))
    events.sort()
    done = [False] * len(scores)

    def holder() -> Holder | None:
        return None if alias[0] is None else Holder(alias[0], score_of[alias[0]])

    for _t, i, step in events:
        if done[i]:
            continue
        me = Me(str(i + 1), scores[i], False, "0")
        if step == "read-before":
            done[i] = before_move(me, holder()) == "yield"
        elif step == "write":
            alias[0] = me.version
        else:
            verdict = after_move(me, holder())
            if verdict == "reclaim":
                alias[0] = me.version
            done[i] = verdict == "superseded"
    return alias[0] or ""


def test_simulated_races_converge_on_the_best():
    rng = random.Random(7)
    failures = 0
    for _trial in range(2000):
        scores = [round(rng.uniform(0.1, 0.9), 4) for _ in range(8)]
        best = str(max(range(8), key=lambda i: scores[i]) + 1)
        if simulate(scores, rng) != best:
            failures += 1
    assert failures == 0, failures


def test_without_verification_races_pick_the_wrong_one():
    """The protocol's checks are what make it converge: with none, the last writer wins."""
    rng = random.Random(7)
    wrong = 0
    for _trial in range(500):
        scores = [round(rng.uniform(0.1, 0.9), 4) for _ in range(8)]
        best = str(max(range(8), key=lambda i: scores[i]) + 1)
        wrong += simulate(scores, rng, checks=0) != best
    assert wrong > 0
