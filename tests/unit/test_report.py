"""The step summary / PR comment: verdict first, escaped user text, chart only with history, size bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deploygate.core.decision import Baseline, Guardrail, Policy, check_guardrails, decide
from deploygate.core.metrics import parse_metrics, weighted_score
from deploygate.core.model import GateResult, HistoryPoint, HubPush, RunContext
from deploygate.core.render import report
from deploygate.core.settings import build_config

VALUES = {"bleu1": 0.5, "bleu2": 0.4, "bleu3": 0.3, "bleu4": 0.2, "rougeL_precision": 0.6}


def make(
    status: str = "deployed",
    *,
    baseline_score: float | None = 0.30,
    event: str = "push",
    force: bool = False,
    history: tuple[HistoryPoint, ...] = (),
    **extra: object,
) -> GateResult:
    cfg = build_config({"force-deploy": force} if force else {})
    metrics = parse_metrics(VALUES, cfg.weights)
    score = weighted_score(metrics, cfg.weights)
    baseline = (
        None if baseline_score is None else Baseline(baseline_score, "champion", "3", metrics=dict(VALUES))
    )
    ctx = RunContext(
        event_name=event,
        git_sha="abcdef1234",
        pr_number=7 if event == "pull_request" else None,
        ci_run_url="https://github.example/o/r/actions/runs/1",
    )
    decision = decide(
        score.score, baseline, Policy(cfg.min_improvement_threshold, force, may_deploy=event == "push")
    )
    return GateResult(
        status=status,
        config=cfg,
        context=ctx,
        metrics=metrics,
        candidate=score,  # type: ignore[arg-type]
        baseline=baseline,
        decision=decision,
        started_at="",
        finished_at="",
        history=history,
        **extra,
    )  # type: ignore[arg-type]


def verdict_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("**"))


@pytest.mark.parametrize(
    ("status", "baseline", "event", "force", "expected"),
    [
        ("deployed", None, "push", False, "✅ Deployed"),
        ("deployed", 0.5, "push", True, "🚀 Force-deployed"),
        ("skipped", 0.5, "push", False, "⏸️ Not deployed"),
        ("verdict-only", 0.1, "pull_request", False, "🔎 Would deploy (verdict only)"),
        ("skipped", 0.5, "pull_request", False, "⏸️ Would not deploy (verdict only)"),
    ],
)
def test_the_verdict_comes_first_with_its_reason(
    status: str, baseline: float | None, event: str, force: bool, expected: str
) -> None:
    result = make(status, baseline_score=baseline, event=event, force=force)
    text = report.render_summary(result)
    line = verdict_line(text)
    assert line.startswith(f"**{expected}** — ")
    assert report.md(result.decision.reason) in line
    assert text.index(line) < text.index("| Metric |")


def test_table_has_weight_contribution_and_delta_per_metric() -> None:
    text = report.render_summary(make(baseline_score=0.2))
    assert "| <code>bleu4</code> | 0.400 | 0.2000 | 0.2000 | +0.0000 | 0.0800 |" in text
    assert "| **Weighted score** | 1.000 | **0.3250** | 0.2000 | **+0.1250** |" in text
    assert "minimum improvement to deploy: **0.0010**" in text


def test_links_and_next_steps() -> None:
    hub = HubPush("o/m", "0123456789", "https://huggingface.co/o/m/commit/0123456789", tag="v4")
    text = report.render_summary(
        make(
            registered_version="4",
            mlflow_run_id="r1",
            mlflow_run_url="http://ml:5000/#/r/1",
            model_version_url="http://ml:5000/#/m/4",
            hub=hub,
        )
    )
    assert "[r1](http://ml:5000/#/r/1)" in text
    assert "[deploygate-model v4](http://ml:5000/#/m/4)" in text
    assert "[o/m&#64;0123456 (v4)](https://huggingface.co/o/m/commit/0123456789)" in text
    assert (
        "To roll back to v" in text
        and "mode: rollback" in text
        and "deploygate rollback --registry-name" in text
    )
    skipped = report.render_summary(make("skipped", baseline_score=0.9))
    assert "force: true" in skipped and "at least **0.9010**" in skipped


def test_user_text_is_escaped() -> None:
    result = make(
        warnings=("a|b <script>alert(1)</script> @everyone [x](javascript:y) `code`",),
        mlflow_run_id="r",
        mlflow_run_url="javascript:alert(1)",
    )
    text = report.render_summary(result)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "@everyone" not in text and "a\\|b" in text
    assert "\\[x\\](javascript:y)" in text  # brackets escaped: not a link
    assert "- MLflow run: r\n" in text  # a non-http URL is not linked
    assert report.link("x", "https://h/a b(c)") == "[x](https://h/a%20b%28c%29)"


def test_chart_marks_the_candidate_and_is_skipped_without_history() -> None:
    assert "xychart-beta" not in report.render_summary(make())
    history = (HistoryPoint("1", 0.2), HistoryPoint("3", 0.3), HistoryPoint("candidate", 0.325, current=True))
    text = report.render_summary(make(history=history))
    assert 'x-axis ["v1", "v3", "candidate ★ this run"]' in text
    assert "bar [0.2, 0.3, 0.325]" in text and "line [0.301, 0.301, 0.301]" in text
    chart = report.chart(make(history=(HistoryPoint('9"; evil', 0.5, current=True),)))
    assert chart is not None and chart.labels == ("v9 evil ★ this run",)


def test_guardrails_are_listed() -> None:
    result = make()
    checks = check_guardrails(dict(VALUES), None, (Guardrail("bleu4", min=0.3),))
    text = report.render_summary(replace(result, decision=replace(result.decision, guardrails=checks)))
    assert "Guardrails: ❌ bleu4 0.2000 &lt; floor 0.3" in text


def test_comment_starts_with_the_marker_and_stays_small() -> None:
    history = tuple(HistoryPoint(str(i), 0.3 + i / 1000) for i in range(200))
    text = report.render_comment(make(history=history, warnings=("w" * 5000,) * 10))
    assert text.startswith("<!-- deploygate -->\n")
    assert len(text.encode()) < 100_000
    assert text.count('"v') <= report.HISTORY_POINTS + 1


def test_failure_report() -> None:
    ctx = RunContext(event_name="pull_request", is_fork=True, pr_number=1)
    text = report.render_failure(
        "server | down", context=ctx, hint="check MLFLOW_TRACKING_URI", warning_only=True
    )
    assert verdict_line(text) == "**⚠️ Could not decide** — server \\| down"
    assert "fork" in text and "check MLFLOW\\_TRACKING\\_URI" in text


def test_next_steps_name_what_blocked_it() -> None:
    from dataclasses import replace

    from deploygate.core.decision import Guardrail, Policy, check_guardrails, decide

    checks = check_guardrails({"bleu4": 0.05}, None, (Guardrail("bleu4", min=0.1),))
    base = make("skipped")
    blocked = replace(base, decision=decide(0.95, base.baseline, Policy(), guardrails=checks))
    text = report.render_summary(blocked)
    assert "A guardrail blocked it" in text and "at least **" not in text
