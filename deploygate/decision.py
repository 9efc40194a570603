"""The deployment decision: a pure function from scores and a policy to a verdict with reasons.

Rules, in order (first match wins; `RULES` below is the table the tests walk):
  1. forced        - `force-deploy` was given: deploy whatever the scores, recorded as forced.
  2. first model   - there is no champion to beat: deploy.
  3. not better    - the candidate does not score strictly higher (ties never deploy): skip.
  4. below threshold - it is higher, but by less than `min_improvement_threshold`: skip.
  5. improved      - higher by at least the threshold: deploy.
Whether the verdict is *carried out* is a separate question (pull requests and dry runs only
report it): see `Decision.deploy` vs `Decision.verdict`. A rejection is a value, not an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["deploy", "skip", "forced"]

# Differences are of floats summed from floats: 0.501 - 0.500 may come out as 0.000999999...
# An improvement within this distance of the threshold counts as meeting it.
THRESHOLD_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Baseline:
    """What the candidate is compared with: the champion (or the best past run), and its score."""

    score: float
    source: Literal["champion", "best-ever"]
    version: str | None = None  # registry version of the champion
    run_id: str | None = None  # the gate run that recorded this score
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """How to decide, and whether a deploy verdict may be carried out in this run."""

    min_improvement: float = 0.001
    force: bool = False
    may_deploy: bool = True  # False on pull requests and dry runs: decide and report only
    why_not_deploy: str = ""  # e.g. "pull request: verdict only"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str
    deploy: bool  # the verdict is to deploy AND this run may carry it out
    improvement: float | None  # candidate - baseline; None for a first model
    improvement_pct: float | None  # relative to the baseline score, in percent
    notes: tuple[str, ...] = ()

    @property
    def wants_deploy(self) -> bool:
        return self.verdict in ("deploy", "forced")


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _compare(score: float, baseline: Baseline | None, threshold: float) -> tuple[Verdict, str, str]:
    if baseline is None:
        return "deploy", "first-model", f"first model: no champion to compare with (score {_fmt(score)})"
    improvement = score - baseline.score
    against = f"champion v{baseline.version}" if baseline.version else f"best past score ({baseline.source})"
    if improvement <= 0:
        relation = "ties" if improvement == 0 else "is below"
        return (
            "skip",
            "not-better",
            f"score {_fmt(score)} {relation} {against} at {_fmt(baseline.score)}",
        )
    if improvement + THRESHOLD_TOLERANCE < threshold:
        return (
            "skip",
            "below-threshold",
            f"improvement {improvement:+.4f} over {against} ({_fmt(baseline.score)}) "
            f"is below the minimum {threshold:g}",
        )
    return (
        "deploy",
        "improved",
        f"improvement {improvement:+.4f} over {against} ({_fmt(baseline.score)}) meets the minimum {threshold:g}",
    )


def decide(score: float, baseline: Baseline | None, policy: Policy) -> Decision:
    """Decide whether a candidate with weighted `score` should replace `baseline`."""
    verdict, rule, reason = _compare(score, baseline, policy.min_improvement)
    notes: list[str] = []
    if policy.force:
        if verdict == "skip":
            notes.append(f"without force: skip ({reason})")
            verdict, rule, reason = "forced", "forced", f"forced deploy; the scores alone say skip: {reason}"
        else:
            notes.append("forced, though the scores alone would deploy")
            verdict, rule, reason = "forced", "forced", f"forced deploy; the scores alone would deploy too: {reason}"
    improvement = None if baseline is None else score - baseline.score
    improvement_pct = None
    if baseline is not None and baseline.score > 0:
        improvement_pct = 100.0 * (score - baseline.score) / baseline.score
    deploy = verdict != "skip" and policy.may_deploy
    if verdict != "skip" and not policy.may_deploy:
        notes.append(f"not carried out: {policy.why_not_deploy or 'deploys are disabled for this run'}")
    return Decision(
        verdict=verdict,
        rule=rule,
        reason=reason,
        deploy=deploy,
        improvement=improvement,
        improvement_pct=improvement_pct,
        notes=tuple(notes),
    )
