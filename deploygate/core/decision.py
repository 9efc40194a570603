"""The deployment decision: a pure function from scores and a policy to a verdict with reasons.

`decide` reads in this order (tests/unit/test_decision.py walks the table):
  1. the score rule, first match wins:
       first model     - there is no champion to beat: deploy.
       not better      - the candidate does not score strictly higher (ties never deploy): skip.
       below threshold - it is higher, but by less than `min_improvement_threshold`: skip.
       improved        - higher by at least the threshold: deploy.
  2. the checks, which only ever turn a deploy into a skip:
       guardrail       - a metric is under its floor or dropped more than allowed: skip.
       not significant - per-example evidence exists and an improvement does not clear the
                         threshold with the configured confidence (paired bootstrap): skip.
  3. forced            - `force-deploy` was given: deploy whatever 1 and 2 said, recorded as forced,
                         with the checks it skipped.
  4. may deploy        - whether this run may carry a deploy verdict out: pull requests and dry runs
                         only report it (`policy_for`; `Decision.deploy` vs `Decision.verdict`).
A rejection is a value, not an exception.
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
    signature: str | None = None  # how its score was measured (signature JSON), when recorded
    origin: str | None = None  # where it came from when not deploygate's own record (an adopted registry)
    stage_only: bool = False  # the Production stage holder of a registry without the champion alias


@dataclass(frozen=True)
class Guardrail:
    """A per-metric limit: `min` is an absolute floor, `max_drop` the largest allowed regression."""

    metric: str
    min: float | None = None
    max_drop: float | None = None


@dataclass(frozen=True)
class GuardrailCheck:
    metric: str
    kind: Literal["min", "max_drop"]
    limit: float
    value: float  # the candidate's value (min) or its drop from the baseline (max_drop)
    passed: bool

    def describe(self) -> str:
        if self.kind == "min":
            return f"{self.metric} {self.value:.4f} {'>=' if self.passed else '<'} floor {self.limit:g}"
        return f"{self.metric} drop {self.value:+.4f} {'within' if self.passed else 'exceeds'} max {self.limit:g}"


@dataclass(frozen=True)
class Significance:
    """The paired-bootstrap evidence for candidate - champion (computed elsewhere, from data)."""

    observed: float
    lower_bound: float  # one-sided lower confidence bound of the difference
    interval: tuple[float, float]  # two-sided interval at `confidence`
    p_value: float  # H0: difference <= threshold
    confidence: float
    resamples: int
    significant: bool  # lower_bound > threshold


def check_guardrails(
    metrics: Mapping[str, float], baseline: Mapping[str, float] | None, guardrails: tuple[Guardrail, ...]
) -> tuple[GuardrailCheck, ...]:
    """Every applicable limit, passed or not. A drop needs the baseline's value of that metric."""
    checks: list[GuardrailCheck] = []
    for g in guardrails:
        value = metrics.get(g.metric)
        if value is None:
            continue
        if g.min is not None:
            checks.append(GuardrailCheck(g.metric, "min", g.min, value, value >= g.min))
        if g.max_drop is not None and baseline and g.metric in baseline:
            drop = baseline[g.metric] - value
            checks.append(
                GuardrailCheck(
                    g.metric, "max_drop", g.max_drop, drop, drop <= g.max_drop + THRESHOLD_TOLERANCE
                )
            )
    return tuple(checks)


@dataclass(frozen=True)
class Policy:
    """How to decide, and whether a deploy verdict may be carried out in this run."""

    min_improvement: float = 0.001
    force: bool = False
    may_deploy: bool = True  # False on pull requests and dry runs: decide and report only
    why_not_deploy: str = ""  # e.g. "pull request: verdict only"


def policy_for(min_improvement: float, *, force: bool, pull_request: bool, dry_run: bool) -> Policy:
    """Rule 4: a pull request's or a dry run's verdict is reported, never carried out."""
    why_not = ""
    if pull_request:
        why_not = "pull request: verdict only, nothing is deployed from a PR"
    elif dry_run:
        why_not = "dry run: verdict only"
    return Policy(min_improvement, force, may_deploy=not why_not, why_not_deploy=why_not)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str
    deploy: bool  # the verdict is to deploy AND this run may carry it out
    improvement: float | None  # candidate - baseline; None for a first model
    improvement_pct: float | None  # relative to the baseline score, in percent
    notes: tuple[str, ...] = ()
    guardrails: tuple[GuardrailCheck, ...] = ()
    significance: Significance | None = None
    skipped_checks: tuple[str, ...] = ()  # what a forced deploy did not let decide

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


def decide(
    score: float,
    baseline: Baseline | None,
    policy: Policy,
    *,
    guardrails: tuple[GuardrailCheck, ...] = (),
    significance: Significance | None = None,
) -> Decision:
    """Decide whether a candidate with weighted `score` should replace `baseline`: the steps of
    the module docstring, in its order."""
    verdict, rule, reason = _compare(score, baseline, policy.min_improvement)  # 1. the score rule
    breached = [c for c in guardrails if not c.passed]
    verdict, rule, reason = _checks(verdict, rule, reason, breached, significance, policy)  # 2. the checks
    if baseline is not None and baseline.origin:
        reason += f" [baseline: {baseline.origin}]"
    notes: list[str] = []
    skipped: list[str] = []
    if policy.force:  # 3. forced
        skipped = [c.describe() for c in breached]
        if rule in ("below-threshold", "not-better", "not-significant"):
            skipped.append(f"score rule: {reason}")
        alone = "say skip" if verdict == "skip" else "would deploy too"
        notes.append(
            f"without force: skip ({reason})"
            if verdict == "skip"
            else "forced, though the checks alone would deploy"
        )
        verdict, rule, reason = "forced", "forced", f"forced deploy; the checks alone {alone}: {reason}"
    if verdict != "skip" and not policy.may_deploy:  # 4. may this run deploy
        notes.append(f"not carried out: {policy.why_not_deploy or 'deploys are disabled for this run'}")
    improvement = None if baseline is None else score - baseline.score
    improvement_pct = None
    if baseline is not None and baseline.score > 0:
        improvement_pct = 100.0 * (score - baseline.score) / baseline.score
    return Decision(
        verdict=verdict,
        rule=rule,
        reason=reason,
        deploy=verdict != "skip" and policy.may_deploy,
        improvement=improvement,
        improvement_pct=improvement_pct,
        notes=tuple(notes),
        guardrails=guardrails,
        significance=significance,
        skipped_checks=tuple(skipped),
    )


def _checks(
    verdict: Verdict,
    rule: str,
    reason: str,
    breached: list[GuardrailCheck],
    significance: Significance | None,
    policy: Policy,
) -> tuple[Verdict, str, str]:
    """Step 2: a breached guardrail, or an improvement that is not significant, turns deploy into skip."""
    if verdict == "deploy" and breached:
        return "skip", "guardrail", "guardrail: " + "; ".join(c.describe() for c in breached)
    if rule != "improved" or significance is None:
        return verdict, rule, reason
    if not significance.significant:
        return (
            "skip",
            "not-significant",
            (
                f"improvement {significance.observed:+.4f} is not significant: the {significance.confidence:.0%} lower "
                f"bound {significance.lower_bound:+.4f} does not clear the minimum {policy.min_improvement:g} "
                f"(p = {significance.p_value:.3f}, {significance.resamples} paired bootstrap resamples)"
            ),
        )
    return (
        verdict,
        rule,
        reason
        + (
            f"; significant at {significance.confidence:.0%} (lower bound {significance.lower_bound:+.4f}, "
            f"p = {significance.p_value:.3f})"
        ),
    )
