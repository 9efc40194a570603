"""Injection: user-controlled strings cannot forge workflow commands or break the reports.

Markdown, HTML, YAML and workflow-command syntax flows in where it naturally does: metric names
(metrics.json + params.yaml weights), the workflow_dispatch `reason`, the event payload (PR title,
branch, commit message), GITHUB_REF and GITHUB_ACTOR, Hub tags and languages. Sinks checked: the
log (no line of stdout starts with `::` except the action's own commands), GITHUB_OUTPUT (parsed as
the runner does: exactly the declared outputs), the step summary and the PR comment (table shape,
no raw HTML, no live @mention, no forged comment marker), and the model card's YAML metadata (read
back with huggingface_hub.ModelCard from the local Hub and compared).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from deploygate.shells.action import OUTPUTS
from tests.action.harness import ActionHarness, ActionRun, pr_payload
from tests.github_api_server import GitHubApi, github_api  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

INJECTIONS = (
    "::set-output name=deployed::true",
    "::add-mask::",
    "%0A::error::pwned",
    "\n::error title=x::pwned",
    "\r::warning::pwned",
    "x\n---\nlicense: evil\n---",
    "<script>alert(1)</script>",
    "a|b|c",
    "`rm -rf /`",
    "@octocat please",
    "[click](javascript:alert(1))",
    "<!-- deploygate -->",
    "ghadelimiter_0\ndeployed=true",
    "${{ secrets.HF_TOKEN }}",
    "# heading **bold** ~~x~~ > quote",
    "key: [unclosed",
)


@pytest.fixture
def action(tmp_path: Path, mlflow_server, registry_name: str, experiment_name: str) -> ActionHarness:
    return ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)


SINKS = ("log", "outputs", "step summary", "PR comment", "model card metadata")

# The commands the action itself writes: masks, groups, stop-commands and its end token, annotations.
OWN_COMMAND = re.compile(
    r"^::(add-mask|group|endgroup|stop-commands|error|warning|notice|debug)( [^:]*)?::|^::[0-9a-f]{32}::$"
)


# Names MLflow would accept as keys as they are; the gate must also take any other name (it folds
# them for MLflow's keys and keeps the real names in one JSON tag).
MLFLOW_SAFE = tuple(re.sub(r"[^A-Za-z0-9_\-. :/]", "", s).replace("/", ":").strip() for s in INJECTIONS)


def metric_key(i: int, text: str) -> str:
    return f"m{i} {text}"


def injected_metrics(names: tuple[str, ...]) -> dict[str, float]:
    return {"bleu4": 0.3, **{metric_key(i, s): 0.2 + i / 100 for i, s in enumerate(names)}}


def injected_workspace(action: ActionHarness, names: tuple[str, ...] = INJECTIONS) -> dict[str, float]:
    """Metrics whose names are the injection strings, weighted through params.yaml."""
    metrics = injected_metrics(names)
    (action.workspace / "results" / "evaluations" / "metrics.json").write_text(json.dumps(metrics))
    weights = {name: 1.0 for name in metrics}
    (action.workspace / "params.yaml").write_text(
        yaml.safe_dump({"deployment": {"weighted_scoring": {"weights": weights}}})
    )
    return metrics


def injected_env() -> dict[str, str]:
    return {
        "GITHUB_REF": "refs/heads/" + " ".join(INJECTIONS),
        "GITHUB_ACTOR": "@octocat <script>\n::error::x",
    }


def assert_log_clean(run: ActionRun) -> None:
    for line in run.stdout.splitlines():
        if line.startswith("::"):
            assert OWN_COMMAND.match(line), f"a workflow command was forged in the log: {line!r}"
        if line.startswith(("::error", "::warning", "::notice")):
            assert "pwned" not in line.split("::", 2)[1], line  # user text only in the escaped message part
    # stop-commands regions are closed with their own token
    starts = re.findall(r"^::stop-commands::([0-9a-f]{32})$", run.stdout, re.M)
    for token in starts:
        assert re.search(rf"^::{token}::$", run.stdout, re.M), "a stop-commands region was never closed"


def assert_outputs_clean(run: ActionRun) -> None:
    assert set(run.outputs) == set(OUTPUTS), f"outputs forged or lost: {sorted(run.outputs)}"
    assert run.outputs["deployed"] in ("true", "false")


def _outside_code(markdown: str) -> str:
    markdown = re.sub(r"<code>.*?</code>", "", markdown, flags=re.S)
    return re.sub(r"```.*?```", "", markdown, flags=re.S)


def assert_markdown_clean(markdown: str, metric_count: int, *, comment: bool = False) -> None:
    text = _outside_code(markdown)
    assert "<script" not in text.lower(), "raw HTML in the report"
    assert "@octocat" not in text, "a live @mention in the report"
    assert "](javascript:" not in text, "a live javascript: link in the report"
    assert markdown.count("<!-- deploygate -->") == (1 if comment else 0), (
        "the sticky-comment marker was forged"
    )
    assert not re.search(r"^::", markdown, re.M)
    lines = markdown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Metric |"))
    table = []
    for line in lines[header:]:
        if not line.startswith("|"):
            break
        table.append(line)
    # header + separator + one row per metric + the weighted score row; each with 7 unescaped pipes
    assert len(table) == 2 + metric_count + 1, "\n".join(table)
    for row in table:
        assert len(re.findall(r"(?<!\\)\|", re.sub(r"<code>.*?</code>", "", row))) == 7, row
    for heading in re.findall(r"^#+ .*$", markdown, re.M):
        assert heading.lstrip("#").strip() in (
            "deploygate",
            "Links",
            "What next",
            "Weighted score over the last deployments",
        ), heading


@pytest.mark.parametrize(
    ("names", "inputs"),
    [
        pytest.param(INJECTIONS, {"dry-run": "true"}, id="any names, dry run"),
        pytest.param(MLFLOW_SAFE, {}, id="MLflow-safe names, deploy"),
        pytest.param(INJECTIONS, {}, id="any names, deploy"),
    ],
)
def test_action_push_with_injected_names_ref_actor_and_reason(action: ActionHarness, names, inputs) -> None:
    metrics = injected_workspace(action, names)
    payload = {
        "inputs": {"force": "false", "reason": "\n".join(INJECTIONS)},
        "ref": "refs/heads/main",
        "head_commit": {"message": "\n".join(INJECTIONS)},
        "repository": {"full_name": "octo/gate"},
    }
    run = action.run(inputs, event_name="workflow_dispatch", payload=payload, env=injected_env())
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["decision"] == "deploy" and run.outputs["deployed"] == ("false" if inputs else "true")
    assert_log_clean(run)
    assert_outputs_clean(run)
    assert_markdown_clean(run.summary, len(metrics))
    info = json.loads(run.result_files()["deployment_info.json"])
    assert info["context"]["reason"] == "\n".join(INJECTIONS)  # kept as data, not interpreted
    comparison = json.loads(run.result_files()["model_comparison.json"])
    assert set(comparison["per_metric"]) == set(metrics)


def test_action_pull_request_comment_with_injected_title_and_branch(
    action: ActionHarness,
    github_api: GitHubApi,  # noqa: F811  (the fixture)
) -> None:
    metrics = injected_workspace(action)
    payload = pr_payload(9)
    payload["pull_request"].update(title="\n".join(INJECTIONS), body="\n".join(INJECTIONS))
    payload["pull_request"]["head"]["ref"] = "feature/" + "".join(INJECTIONS)
    run = action.run(event_name="pull_request", payload=payload, env=injected_env(), api=github_api)
    assert run.rc == 0, run.stdout + run.stderr
    assert_log_clean(run)
    assert_outputs_clean(run)
    assert_markdown_clean(run.summary, len(metrics))
    bodies = github_api.state.bodies("octo/gate", 9)
    assert len(bodies) == 1
    assert_markdown_clean(bodies[0], len(metrics), comment=True)
    assert bodies[0].startswith("<!-- deploygate -->")


def test_action_failure_with_injected_metric_name(action: ActionHarness) -> None:
    """The error path: a weight names a missing metric whose name is an injection string."""
    weights = {s: 1.0 for s in INJECTIONS}
    (action.workspace / "params.yaml").write_text(
        yaml.safe_dump({"deployment": {"weighted_scoring": {"weights": weights}}})
    )
    run = action.run(env=injected_env())
    assert run.rc == 2, run.stdout + run.stderr
    assert_log_clean(run)
    assert_outputs_clean(run)
    assert "\n" not in run.outputs["reason"]
    text = _outside_code(run.summary)
    assert "<script" not in text and "@octocat" not in text and not re.search(r"^::", run.summary, re.M)
    assert len(run.commands("error")) == 1


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
@pytest.mark.parametrize(
    "names", [pytest.param(MLFLOW_SAFE, id="MLflow-safe names"), pytest.param(INJECTIONS, id="any names")]
)
def test_model_card_metadata_survives_injected_metric_names_and_tags(
    names, tmp_path: Path, capsys, monkeypatch, mlflow_server, hub_server, registry_name, experiment_name
) -> None:
    from huggingface_hub import HfApi, ModelCard

    from tests.gatekit import run_gate
    from tests.modelfactory import make_lora_adapter, make_tiny_llama

    base = make_tiny_llama(tmp_path / "base", shards=1)
    adapter = make_lora_adapter(base, tmp_path / "adapter", r=2, alpha=4, target_modules=("q_proj",))
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("GITHUB_SHA", "cd" * 20)
    repo = hub_server.new_repo_id("inject")
    metrics = injected_metrics(names)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "deployment": {
                    "weighted_scoring": {"weights": {name: 1.0 for name in metrics}},
                    "huggingface": {
                        "tags": list(INJECTIONS),
                        "language": ["en", "x\n---\ny: z"],
                        "license": "other: [x]",
                    },
                }
            }
        )
    )
    res = run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry_name,
        experiment=experiment_name,
        metrics=metrics,
        location={"local_path": str(adapter)},
        name="inject",
        hub=True,
        extra=["--hf-model-id", repo, "--config", str(params), "--reason", "\n".join(INJECTIONS)],
    )
    assert res.code == 0, res.err
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    card = ModelCard.load(api.hf_hub_download(repo, "README.md", cache_dir=tmp_path / "cache"))
    data = card.data
    assert set(INJECTIONS) <= set(data.tags)
    assert data.language == ["en", "x\n---\ny: z"] and data.license == "other: [x]"
    values = {r.metric_name: r.metric_value for r in data.eval_results}
    assert {metric_key(i, s): round(0.2 + i / 100, 6) for i, s in enumerate(names)}.items() <= values.items()
    # the body: no raw HTML, no live mention, no second metadata block
    body = re.sub(r"```.*?```", "", card.text, flags=re.S)
    body = re.sub(r"`[^`\n]*`", "", body)
    assert "<script" not in body and "@octocat" not in body
    assert card.content.count("\n---\n") >= 1 and card.content.startswith("---\n")
    commit_messages = [c.title for c in api.list_repo_commits(repo)]
    assert all("\n" not in m for m in commit_messages)


def test_injection_table_is_hostile() -> None:
    """The strings above are what the sinks are checked against: distinct, and each carrying the
    syntax of at least one sink (workflow commands, Markdown/HTML, YAML, the comment marker)."""
    assert len(set(INJECTIONS)) == len(INJECTIONS)
    syntax = re.compile(r"::|%0A|[\n\r<>|`@\[\]#~*:$]|---")
    assert [s for s in INJECTIONS if not syntax.search(s)] == []
    print(f"\ninjection: {len(INJECTIONS)} strings x {len(SINKS)} sinks ({', '.join(SINKS)})")
