"""The decision table: every rule, the edges (ties, exactly-at-threshold), force, PR/dry run."""

from __future__ import annotations

import pytest

from deploygate.core.decision import Baseline, Policy, decide


def champ(score: float) -> Baseline:
    return Baseline(score=score, source="champion", version="3")


CASES = [
    # id, score, baseline, policy, verdict, rule, deploy
    ("first model deploys", 0.2, None, Policy(), "deploy", "first-model", True),
    ("first model, zero score, still deploys", 0.0, None, Policy(), "deploy", "first-model", True),
    ("clear improvement", 0.30, champ(0.25), Policy(), "deploy", "improved", True),
    (
        "improvement exactly at threshold",
        0.251,
        champ(0.250),
        Policy(min_improvement=0.001),
        "deploy",
        "improved",
        True,
    ),
    (
        "improvement just below threshold",
        0.2509,
        champ(0.250),
        Policy(min_improvement=0.001),
        "skip",
        "below-threshold",
        False,
    ),
    ("tie never deploys", 0.25, champ(0.25), Policy(), "skip", "not-better", False),
    (
        "tie with zero threshold never deploys",
        0.25,
        champ(0.25),
        Policy(min_improvement=0.0),
        "skip",
        "not-better",
        False,
    ),
    (
        "any gain with zero threshold",
        0.2500001,
        champ(0.25),
        Policy(min_improvement=0.0),
        "deploy",
        "improved",
        True,
    ),
    ("worse is skipped", 0.20, champ(0.25), Policy(), "skip", "not-better", False),
    ("forced worse deploys as forced", 0.20, champ(0.25), Policy(force=True), "forced", "forced", True),
    ("forced better is recorded as forced", 0.30, champ(0.25), Policy(force=True), "forced", "forced", True),
    ("forced first model", 0.1, None, Policy(force=True), "forced", "forced", True),
    (
        "PR: verdict deploy, not carried out",
        0.30,
        champ(0.25),
        Policy(may_deploy=False),
        "deploy",
        "improved",
        False,
    ),
    (
        "PR: forced, not carried out",
        0.20,
        champ(0.25),
        Policy(force=True, may_deploy=False),
        "forced",
        "forced",
        False,
    ),
    ("PR: skip stays skip", 0.20, champ(0.25), Policy(may_deploy=False), "skip", "not-better", False),
    (
        "large threshold blocks",
        0.30,
        champ(0.25),
        Policy(min_improvement=0.1),
        "skip",
        "below-threshold",
        False,
    ),
]


@pytest.mark.parametrize(
    ("score", "baseline", "policy", "verdict", "rule", "deploy"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
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


# --- guardrails and significance ---------------------------------------------------------------

from deploygate.core.decision import Guardrail, Significance, check_guardrails  # noqa: E402


def sig(observed, lower, significant, p=0.01):
    return Significance(
        observed=observed,
        lower_bound=lower,
        interval=(lower, observed * 2),
        p_value=p,
        confidence=0.95,
        resamples=1000,
        significant=significant,
    )


GUARD_CASES = [
    # id, metrics, baseline metrics, guardrails, expected passed flags
    ("floor met", {"bleu4": 0.2}, None, (Guardrail("bleu4", min=0.1),), [True]),
    ("floor breached", {"bleu4": 0.05}, None, (Guardrail("bleu4", min=0.1),), [False]),
    (
        "drop within",
        {"rougeL_precision": 0.445},
        {"rougeL_precision": 0.45},
        (Guardrail("rougeL_precision", max_drop=0.01),),
        [True],
    ),
    (
        "drop exceeds",
        {"rougeL_precision": 0.43},
        {"rougeL_precision": 0.45},
        (Guardrail("rougeL_precision", max_drop=0.01),),
        [False],
    ),
    (
        "drop exactly at limit",
        {"rougeL_precision": 0.44},
        {"rougeL_precision": 0.45},
        (Guardrail("rougeL_precision", max_drop=0.01),),
        [True],
    ),
    (
        "drop needs a baseline",
        {"rougeL_precision": 0.1},
        None,
        (Guardrail("rougeL_precision", max_drop=0.01),),
        [],
    ),
    (
        "both limits",
        {"bleu4": 0.05},
        {"bleu4": 0.2},
        (Guardrail("bleu4", min=0.1, max_drop=0.05),),
        [False, False],
    ),
]


@pytest.mark.parametrize(
    ("metrics", "base", "rails", "passed"), [c[1:] for c in GUARD_CASES], ids=[c[0] for c in GUARD_CASES]
)
def test_guardrail_checks(metrics, base, rails, passed):
    assert [c.passed for c in check_guardrails(metrics, base, rails)] == passed


def test_guardrail_blocks_an_improvement_and_names_itself():
    checks = check_guardrails(
        {"rougeL_precision": 0.40},
        {"rougeL_precision": 0.45},
        (Guardrail("rougeL_precision", max_drop=0.01),),
    )
    d = decide(0.30, champ(0.25), Policy(), guardrails=checks)
    assert (d.verdict, d.rule) == ("skip", "guardrail") and "rougeL_precision" in d.reason


def test_guardrail_floor_blocks_a_first_model():
    checks = check_guardrails({"bleu4": 0.01}, None, (Guardrail("bleu4", min=0.05),))
    assert decide(0.3, None, Policy(), guardrails=checks).rule == "guardrail"


def test_forced_deploy_lists_the_checks_it_skipped():
    checks = check_guardrails({"bleu4": 0.01}, None, (Guardrail("bleu4", min=0.05),))
    d = decide(0.2, champ(0.25), Policy(force=True), guardrails=checks)
    assert d.verdict == "forced"
    assert any("bleu4" in c for c in d.skipped_checks) and any("score rule" in c for c in d.skipped_checks)


SIG_CASES = [
    ("significant gain deploys", 0.30, sig(0.05, 0.02, True), "deploy", "improved"),
    ("big but noisy gain is skipped", 0.30, sig(0.05, -0.01, False, p=0.2), "skip", "not-significant"),
    ("below threshold stays below threshold", 0.2505, sig(0.0005, 0.0001, False), "skip", "below-threshold"),
]


@pytest.mark.parametrize(
    ("score", "evidence", "verdict", "rule"), [c[1:] for c in SIG_CASES], ids=[c[0] for c in SIG_CASES]
)
def test_significance_rule(score, evidence, verdict, rule):
    d = decide(score, champ(0.25), Policy(), significance=evidence)
    assert (d.verdict, d.rule) == (verdict, rule)
    assert d.significance is evidence
