"""The decision table: every rule, the edges (ties, exactly-at-threshold), force, PR/dry run."""

from __future__ import annotations

import pytest

from deploygate.decision import Baseline, Policy, decide


def champ(score: float) -> Baseline:
    return Baseline(score=score, source="champion", version="3")


CASES = [
    # id, score, baseline, policy, verdict, rule, deploy
    ("first model deploys", 0.2, None, Policy(), "deploy", "first-model", True),
    ("first model, zero score, still deploys", 0.0, None, Policy(), "deploy", "first-model", True),
    ("clear improvement", 0.30, champ(0.25), Policy(), "deploy", "improved", True),
    ("improvement exactly at threshold", 0.251, champ(0.250), Policy(min_improvement=0.001), "deploy", "improved", True),
    ("improvement just below threshold", 0.2509, champ(0.250), Policy(min_improvement=0.001), "skip", "below-threshold", False),
    ("tie never deploys", 0.25, champ(0.25), Policy(), "skip", "not-better", False),
    ("tie with zero threshold never deploys", 0.25, champ(0.25), Policy(min_improvement=0.0), "skip", "not-better", False),
    ("any gain with zero threshold", 0.2500001, champ(0.25), Policy(min_improvement=0.0), "deploy", "improved", True),
    ("worse is skipped", 0.20, champ(0.25), Policy(), "skip", "not-better", False),
    ("forced worse deploys as forced", 0.20, champ(0.25), Policy(force=True), "forced", "forced", True),
    ("forced better is recorded as forced", 0.30, champ(0.25), Policy(force=True), "forced", "forced", True),
    ("forced first model", 0.1, None, Policy(force=True), "forced", "forced", True),
    ("PR: verdict deploy, not carried out", 0.30, champ(0.25), Policy(may_deploy=False), "deploy", "improved", False),
    ("PR: forced, not carried out", 0.20, champ(0.25), Policy(force=True, may_deploy=False), "forced", "forced", False),
    ("PR: skip stays skip", 0.20, champ(0.25), Policy(may_deploy=False), "skip", "not-better", False),
    ("large threshold blocks", 0.30, champ(0.25), Policy(min_improvement=0.1), "skip", "below-threshold", False),
]


@pytest.mark.parametrize(("score", "baseline", "policy", "verdict", "rule", "deploy"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(score, baseline, policy, verdict, rule, deploy):
    d = decide(score, baseline, policy)
    assert (d.verdict, d.rule, d.deploy) == (verdict, rule, deploy)
    assert d.reason  # every decision explains itself


def test_float_noise_at_threshold_counts_as_meeting_it():
    # 0.3 - 0.299 is 0.0010000000000000009 but 0.701 - 0.7 is 0.0009999999999998899
    assert decide(0.701, champ(0.7), Policy(min_improvement=0.001)).verdict == "deploy"


def test_improvement_and_percent():
    d = decide(0.30, champ(0.25), Policy())
    assert d.improvement == pytest.approx(0.05)
    assert d.improvement_pct == pytest.approx(20.0)
    assert decide(0.3, None, Policy()).improvement is None


def test_forced_keeps_what_the_scores_said():
    d = decide(0.20, champ(0.25), Policy(force=True))
    assert any("without force: skip" in n for n in d.notes)
    assert "0.2500" in d.reason


def test_not_carried_out_says_why():
    d = decide(0.30, champ(0.25), Policy(may_deploy=False, why_not_deploy="pull request: verdict only"))
    assert d.wants_deploy and not d.deploy
    assert any("pull request" in n for n in d.notes)


def test_zero_baseline_has_no_percent():
    d = decide(0.1, champ(0.0), Policy())
    assert d.improvement_pct is None and d.verdict == "deploy"
