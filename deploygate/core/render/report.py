"""The run report as Markdown: the step summary, the sticky PR comment and the failure note.

Pure: a GateResult (or an error message) in, Markdown text out, rendered from
`templates/summary.md.j2` with StrictUndefined. Every string that did not come from this module
(reasons, names, paths, URLs, error messages) is escaped here for Markdown tables and HTML, so a
metric called `a|b` or a reason with `<script>` or `@someone` renders as text. It must not read
the environment, files other than its template, or talk to anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2

from deploygate import __version__
from deploygate.core.model import GateResult, HistoryPoint, RunContext
from deploygate.core.render.markdown import code, link, md
from deploygate.core.render.templating import environment
from deploygate.core.signing import VerifyResult

if TYPE_CHECKING:
    from deploygate.core.model import RollbackResult
    from deploygate.core.settings import GateConfig

COMMENT_MARKER = "<!-- deploygate -->"
HISTORY_POINTS = 20  # the chart shows the last deployments, not all of them


# --- formatting (md, code and link are core/render/markdown.py; all are Jinja filters) -------------


def num(value: float | None, places: int = 4) -> str:
    return "—" if value is None else f"{value:.{places}f}"


def signed(value: float | None, places: int = 4) -> str:
    return "—" if value is None else f"{value:+.{places}f}"


# --- what the template shows --------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    weight: float
    candidate: float | None
    champion: float | None
    contribution: float | None

    @property
    def delta(self) -> float | None:
        if self.candidate is None or self.champion is None:
            return None
        return self.candidate - self.champion


@dataclass(frozen=True)
class Chart:
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    to_beat: float | None
    y_min: float
    y_max: float


_HEADLINES: Mapping[tuple[str, str], tuple[str, str]] = {
    ("deployed", "deploy"): ("✅", "Deployed"),
    ("deployed", "forced"): ("🚀", "Force-deployed"),
    ("skipped", "skip"): ("⏸️", "Not deployed"),
    ("verdict-only", "deploy"): ("🔎", "Would deploy (verdict only)"),
    ("verdict-only", "forced"): ("🔎", "Would force-deploy (verdict only)"),
    ("verdict-only", "skip"): ("⏸️", "Would not deploy (verdict only)"),
    ("superseded", "deploy"): ("⏭️", "Superseded by a concurrent deploy"),
    ("superseded", "forced"): ("⏭️", "Superseded by a concurrent deploy"),
}


def _verdict_only(result: GateResult) -> bool:
    """A run that could not have deployed (pull request, dry run), whatever it decided."""
    return result.status == "verdict-only" or result.context.is_pull_request or result.config.dry_run


def headline(result: GateResult) -> tuple[str, str]:
    if result.status == "failed":
        return "❌", "Failed"
    status = "verdict-only" if result.status == "skipped" and _verdict_only(result) else result.status
    return _HEADLINES.get((status, result.decision.verdict), ("ℹ️", result.status))


def metric_rows(result: GateResult) -> list[Row]:
    champion = result.baseline.metrics if result.baseline else {}
    return [
        Row(
            metric=name,
            weight=weight,
            candidate=result.metrics.values.get(name),
            champion=champion.get(name),
            contribution=result.candidate.contributions.get(name),
        )
        for name, weight in result.candidate.weights.items()
    ]


def _label(point: HistoryPoint) -> str:
    version = re.sub(r"[^A-Za-z0-9 ._-]", "", point.version)[:24] or "?"
    name = version if not version[0].isdigit() else f"v{version}"
    return f"{name} ★ this run" if point.current else name


def chart(result: GateResult) -> Chart | None:
    """Weighted score of the last deployments (and this candidate), for a Mermaid xychart-beta."""
    points = list(result.history)[-HISTORY_POINTS:]
    if not points:
        return None
    scores = tuple(round(p.score, 4) for p in points)
    to_beat = None
    if result.baseline is not None:
        to_beat = round(result.baseline.score + result.config.min_improvement_threshold, 4)
    seen = (*scores, *(() if to_beat is None else (to_beat,)))
    pad = max((max(seen) - min(seen)) * 0.2, 0.01)
    y_min = max(0.0, round(min(seen) - pad, 3))
    y_max = min(1.0, round(max(seen) + pad, 3))
    if y_max <= y_min:
        y_max = y_min + 0.01
    return Chart(tuple(_label(p) for p in points), scores, to_beat, y_min, y_max)


def next_steps(result: GateResult) -> list[str]:
    """What a reader can do now, as Markdown bullets (already escaped)."""
    config, decision, baseline = result.config, result.decision, result.baseline
    model = code(f"models:/{config.registry_name}@{config.champion_alias}")
    steps: list[str] = []
    if result.status == "failed":
        steps.append(
            "Fix the error above and re-run the job. deploygate moves the champion alias last, "
            f"so {model} still points at the previous champion."
        )
    elif result.status == "skipped" and not _verdict_only(result):
        if decision.rule == "guardrail":
            steps.append(
                "A guardrail blocked it although the weighted score may be higher: improve the guarded metric, "
                "or change the limit (<code>guardrails</code> input / params.yaml <code>deployment.guardrails</code>)."
            )
        elif decision.rule == "not-significant":
            steps.append(
                "The gain is within the noise of the evaluation set: evaluate on more examples, or lower "
                "<code>confidence</code> if a weaker guarantee is acceptable."
            )
        elif baseline is not None:
            need = baseline.score + config.min_improvement_threshold
            steps.append(
                f"To pass the gate, the candidate needs a weighted score of at least **{num(need)}** "
                f"(it has {num(result.candidate.score)})."
            )
        steps.append(
            "To deploy it anyway, run the deploy workflow with <code>force: true</code> "
            "(Actions → the workflow → *Run workflow*), or set <code>force-deploy: true</code> on the step."
        )
    elif _verdict_only(result):
        if result.context.is_pull_request:
            steps.append(
                "This is a pull request, so nothing was registered or pushed: the deploy workflow "
                "decides again when the change reaches the default branch."
            )
        elif config.dry_run:
            steps.append("This was a dry run: set <code>dry-run: false</code> to carry the verdict out.")
        if decision.verdict == "skip":
            steps.append("To deploy it anyway, run the deploy workflow with <code>force: true</code>.")
    elif result.status == "deployed":
        steps += _deployed_steps(result, model)
    return steps


def _deployed_steps(result: GateResult, model: str) -> list[str]:
    config, baseline = result.config, result.baseline
    version = f" (v{md(result.registered_version)})" if result.registered_version else ""
    steps = [f"Production now resolves {model}{version}."]
    if baseline is not None and baseline.version:
        steps.append(
            f"To roll back to v{md(baseline.version)} (registry and Hub together): run the action with "
            "<code>mode: rollback</code>, or "
            + code(f"deploygate rollback --registry-name {config.registry_name}")
        )
    if result.hub is not None:
        steps.append(_signing_step(result))
    return steps


def _signing_step(result: GateResult) -> str:
    """The one line on signing after a push: how to check it, or how to turn it on."""
    hub = result.hub
    assert hub is not None
    target = f"{hub.repo_id}@{hub.tag}" if hub.tag else hub.repo_id
    if hub.signature_sha256 is None and result.config.signing != "off":
        # a re-run that found the version's tag pushed already: its files (and signature) stay as they were
        return "Signing is on; the Hub held this version already, so nothing was signed again: " + code(
            f"deploygate verify {target}"
        )
    if hub.signature_sha256 is None:
        return (
            "Not signed: set <code>signing-key</code> from a secret (or <code>signing: sigstore</code> with "
            "<code>id-token: write</code>) to push <code>model.sig</code> and the verdict with the model "
            "(docs/signing.md)."
        )
    return f"Signed ({md(hub.signing or 'key')}): anyone can check it with " + code(
        f"deploygate verify {target}"
    )


def evidence(result: GateResult) -> list[str]:
    """Guardrails, significance and comparability lines (escaped Markdown), when the run had them."""
    lines: list[str] = []
    decision = result.decision
    if decision.guardrails:
        checks = " · ".join(f"{'✅' if g.passed else '❌'} {md(g.describe())}" for g in decision.guardrails)
        lines.append(f"Guardrails: {checks}")
    sig = decision.significance
    if sig is not None:
        verdict = "significant" if sig.significant else "**not** significant"
        lines.append(
            f"Paired bootstrap ({sig.resamples} resamples): gain {signed(sig.observed)}, "
            f"{sig.confidence:.0%} interval [{signed(sig.interval[0])}, {signed(sig.interval[1])}], "
            f"lower bound {signed(sig.lower_bound)} vs the threshold: {verdict} (p = {sig.p_value:.3f})"
        )
    if decision.skipped_checks:
        lines.append("Not checked because the deploy was forced: " + md(", ".join(decision.skipped_checks)))
    if result.comparability == "allowed":
        lines.append(
            "⚠️ Candidate and champion were scored differently (allowed by <code>allow-incomparable</code>): "
            + md("; ".join(result.signature_differences) or "see model_comparison.json")
        )
    return lines


def _links(result: GateResult) -> list[str]:
    out: list[str] = []
    if result.mlflow_run_url or result.mlflow_run_id:
        out.append("MLflow run: " + link(result.mlflow_run_id or "gate run", result.mlflow_run_url))
    if result.registered_version:
        out.append(
            "Registered version: "
            + link(f"{result.config.registry_name} v{result.registered_version}", result.model_version_url)
        )
    if result.hub is not None:
        label = f"{result.hub.repo_id}@{result.hub.sha[:7]}" + (
            f" ({result.hub.tag})" if result.hub.tag else ""
        )
        out.append("Hugging Face Hub commit: " + link(label, result.hub.url))
    if result.context.ci_run_url:
        out.append("Workflow run: " + link("logs and artifacts", result.context.ci_run_url))
    return out


def _footer(context: RunContext) -> str:
    bits = [f"event {code(context.event_name)}"]
    if context.pr_number is not None:
        bits.append(f"PR #{context.pr_number}")
    if context.git_sha:
        bits.append(f"commit {code(context.git_sha[:7])}")
    if context.actor:
        bits.append(f"by {md(context.actor)}")
    bits.append(f"deploygate {__version__}")
    return " · ".join(bits)


# --- rendering ----------------------------------------------------------------------------------

# Markdown, not HTML: values are escaped explicitly with the filters below
_ENV = environment(jinja2.PackageLoader("deploygate", "templates"))
_ENV.filters.update(md=md, code=code, num=num, signed=signed)
_ENV.globals.update(link=link)


def _render(**values: Any) -> str:
    text = _ENV.get_template("summary.md.j2").render(**values)
    return re.sub(r"\n{3,}", "\n\n", text)


def _result_values(result: GateResult, *, comment: bool) -> dict[str, Any]:
    icon, title = headline(result)
    notes: list[str] = [*result.decision.notes, *result.metrics.notes]
    warnings: Sequence[str] = [*result.config.warnings, *result.warnings]
    baseline = result.baseline
    if baseline is None:
        against = "no champion yet (first model)"
    elif baseline.source == "champion":
        version = f" v{md(baseline.version)}" if baseline.version else ""
        against = f"champion {code('@' + result.config.champion_alias)}{version}"
    else:
        against = "the best past gate run" + (f" (v{md(baseline.version)})" if baseline.version else "")
    return {
        "comment": comment,
        "marker": COMMENT_MARKER,
        "failure": None,
        "icon": icon,
        "title": title,
        "reason": result.error or result.decision.reason,
        "result": result,
        "rows": metric_rows(result),
        "champion_label": f"Champion v{baseline.version}" if baseline and baseline.version else "Champion",
        "against": against,
        "notes": notes,
        "evidence": evidence(result),
        "warnings": list(warnings),
        "fork": result.context.is_fork,
        "links": _links(result),
        "next_steps": next_steps(result),
        "chart": chart(result),
        "footer": _footer(result.context),
    }


def render_summary(result: GateResult) -> str:
    """The step summary: verdict, metric table, threshold, links, next steps, trend chart."""
    return _render(**_result_values(result, comment=False))


def render_comment(result: GateResult) -> str:
    """The sticky PR comment: the same report, starting with the hidden marker."""
    return _render(**_result_values(result, comment=True))


def render_failure(
    message: str,
    *,
    context: RunContext,
    hint: str | None = None,
    comment: bool = False,
    warning_only: bool = False,
) -> str:
    """The report when no result exists (bad input, unreachable server, ...)."""
    return _render(
        comment=comment,
        marker=COMMENT_MARKER,
        failure={"message": message, "hint": hint, "warning_only": warning_only},
        icon="⚠️" if warning_only else "❌",
        title="Could not decide" if warning_only else "Failed",
        fork=context.is_fork,
        footer=_footer(context),
        ci_run_url=context.ci_run_url,
    )


def render_rollback(result: RollbackResult, cfg: GateConfig, context: RunContext) -> str:
    """The step summary of a rollback: who, what, why, and the links."""
    lines = [
        "### deploygate",
        "",
        f"**⏪ Rolled back** {code(cfg.registry_name)}: champion v{md(result.from_version)} → "
        f"**v{md(result.to_version)}**"
        + (f" (weighted score {result.score:.4f})" if result.score is not None else ""),
        "",
        f"- By: {md(context.actor or 'unknown')}; reason: {md(context.reason or 'none given')}",
    ]
    if result.mlflow_run_url:
        lines.append(f"- MLflow run: {link('rollback run', result.mlflow_run_url)}")
    if result.hub:
        lines.append(
            f"- Hub: {link(result.hub.repo_id + ' main now holds v' + result.to_version, result.hub.url)}"
        )
    lines.append("")
    lines.append("The next gate run compares candidates with the restored champion.")
    return "\n".join(lines) + "\n"


def render_verify(result: VerifyResult) -> str:
    """The step summary of `mode: verify`: verified or not, each problem, the verdict carried."""
    from deploygate.core.render.verdict import verdict_lines

    mark = "✅ Verified" if result.verified else "❌ Not verified"
    lines = ["### deploygate", "", f"**{mark}**: {code(result.target)}", ""]
    lines += [f"- {md(problem)}" for problem in result.problems]
    if result.verified:
        lines.append(f"- {result.files} files signed; none changed, added or removed.")
    if result.verdict is not None:
        trust = "" if result.verified else " (not trustworthy: the files do not match their signature)"
        lines += ["", f"The verdict it carries{trust}:", ""]
        lines += [f"- {md(line)}" for line in verdict_lines(result.verdict)]
    return "\n".join(lines) + "\n"
