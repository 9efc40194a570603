"""The action end to end, as the runner runs it: env, files, event payloads, exit codes, registry state."""

from __future__ import annotations

import json

import pytest

from tests.action.harness import (
    BETTER,
    REPO,
    WORSE,
    ActionHarness,
    action_inputs,
    dispatch_payload,
    pr_payload,
)
from tests.github_api_server import GitHubApi

pytestmark = pytest.mark.slow
MARKER = "<!-- deploygate -->"


def test_push_first_model_deploys_and_writes_every_output(action: ActionHarness) -> None:
    run = action.run()
    assert run.rc == 0, run.stdout + run.stderr
    assert set(run.outputs) == set(yaml_outputs())
    assert run.outputs["decision"] == "deploy"
    assert run.outputs["deployed"] == "true"
    assert run.outputs["model-version"] == "1"
    assert run.outputs["baseline-score"] == ""
    assert run.outputs["mlflow-run-url"].startswith(action.mlflow.uri)
    assert "first model" in run.outputs["reason"]
    assert action.champion() == "1"
    # verdict first, then the table; the result files are there for the artifact upload
    first = next(line for line in run.summary.splitlines() if line.startswith("**"))
    assert "Deployed" in first and "first model" in first
    assert "| Metric | Weight | Candidate |" in run.summary
    assert {"deployment_info.json", "model_comparison.json", "deployment_logs.txt"} <= set(run.result_files())
    # long steps are grouped, and the groups are balanced
    assert run.stdout.count("::group::") == run.stdout.count("::endgroup::") >= 2
    assert run.commands("notice")


def yaml_outputs() -> list[str]:
    import yaml

    from tests.action.harness import ROOT

    return list(yaml.safe_load((ROOT / "action.yml").read_text())["outputs"])


def test_push_worse_model_skips_and_fail_on_reject_exits_3(action: ActionHarness) -> None:
    assert action.run().rc == 0
    action.write_workspace(WORSE)
    skip = action.run()
    assert skip.rc == 0, skip.stdout + skip.stderr
    assert skip.outputs["decision"] == "skip"
    assert skip.outputs["deployed"] == "false"
    assert skip.outputs["model-version"] == ""
    assert float(skip.outputs["improvement"]) < 0
    assert "force: true" in skip.summary  # what to do next
    assert action.versions() == ["1"]

    rejected = action.run({"fail-on-reject": "yes"})
    assert rejected.rc == 3
    assert rejected.outputs["decision"] == "skip"
    errors = rejected.commands("error")
    assert len(errors) == 1 and errors[0].startswith("::error title=deploygate::rejected")
    assert action.champion() == "1"


def test_workflow_dispatch_force_true_deploys_a_worse_model(action: ActionHarness) -> None:
    # a boolean input arrives as JSON true; the other spellings ("true", force-deploy, ...) are read
    # by dispatch_force, tested in tests/unit/test_action_context.py
    assert action.run().rc == 0
    action.write_workspace(WORSE)
    run = action.run(event_name="workflow_dispatch", payload=dispatch_payload(True))
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["decision"] == "forced"
    assert run.outputs["deployed"] == "true"
    assert run.outputs["model-version"] == "2"
    assert action.champion() == "2"
    assert "Force-deployed" in run.summary


def test_workflow_dispatch_force_false_follows_the_scores(action: ActionHarness) -> None:
    assert action.run().rc == 0
    action.write_workspace(WORSE)
    run = action.run(event_name="workflow_dispatch", payload=dispatch_payload("false"))
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["decision"] == "skip"
    assert action.versions() == ["1"]


def test_pull_request_decides_never_deploys_and_keeps_one_sticky_comment(
    action: ActionHarness, github_api: GitHubApi
) -> None:
    assert action.run().rc == 0
    # eight comments by people first: the marker comment lands on page 2 (the fake pages by 5)
    github_api.state.seed(REPO, 7, [f"looks good {i}" for i in range(8)])
    action.write_workspace(BETTER)
    first = action.run(event_name="pull_request", payload=pr_payload(7), api=github_api)
    assert first.rc == 0, first.stdout + first.stderr
    assert first.outputs["decision"] == "deploy"
    assert first.outputs["deployed"] == "false"
    assert first.outputs["model-version"] == ""
    assert action.versions() == ["1"] and action.champion() == "1"  # a PR never registers
    assert "verdict only" in first.summary
    bodies = github_api.state.bodies(REPO, 7)
    assert len(bodies) == 9 and bodies[-1].startswith(MARKER)
    assert "Would deploy" in bodies[-1]

    action.write_workspace(WORSE)
    second = action.run(event_name="pull_request", payload=pr_payload(7), api=github_api)
    assert second.rc == 0, second.stdout + second.stderr
    bodies = github_api.state.bodies(REPO, 7)
    assert len(bodies) == 9, "the second run must update the comment, not add one"
    assert bodies[-1].startswith(MARKER) and "Would not deploy" in bodies[-1]
    methods = [m for m, path, _ in github_api.state.requests if "comments" in path]
    assert methods.count("POST") == 1 and methods.count("PATCH") == 1
    assert not second.commands("warning")


def test_pr_comment_false_posts_nothing(action: ActionHarness, github_api: GitHubApi) -> None:
    run = action.run({"pr-comment": "off"}, event_name="pull_request", payload=pr_payload(3), api=github_api)
    assert run.rc == 0, run.stdout + run.stderr
    assert github_api.state.requests == []
    assert run.outputs["decision"] == "deploy" and run.outputs["deployed"] == "false"


def test_fork_pull_request_with_a_read_only_token_warns_and_passes(
    action: ActionHarness, github_api: GitHubApi
) -> None:
    github_api.state.read_only_repos.add(REPO)
    run = action.run(event_name="pull_request", payload=pr_payload(9, fork=True), api=github_api)
    assert run.rc == 0, run.stdout + run.stderr
    warnings = run.commands("warning")
    assert any("fork" in w and "403" in w for w in warnings), warnings
    assert github_api.state.bodies(REPO, 9) == []
    assert "fork" in run.summary
    assert action.versions() == []


def test_fork_pull_request_without_secrets_reports_instead_of_failing(
    action: ActionHarness, github_api: GitHubApi
) -> None:
    github_api.state.read_only_repos.add(REPO)
    run = action.run(
        event_name="pull_request",
        payload=pr_payload(10, fork=True),
        api=github_api,
        env={
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"
        },  # nothing listens: what a fork without secrets sees
    )
    assert run.rc == 0, run.stdout + run.stderr
    assert not run.commands("error")
    assert any("fork" in w for w in run.commands("warning"))
    assert "Could not decide" in run.summary


def test_unreachable_tracking_server_fails_with_one_annotation(action: ActionHarness) -> None:
    run = action.run(env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert run.rc == 1, run.stdout + run.stderr
    errors = run.commands("error")
    assert len(errors) == 1 and errors[0].startswith("::error title=deploygate::")
    assert run.outputs["deployed"] == "false" and run.outputs["reason"]
    assert set(run.outputs) == set(yaml_outputs())
    assert "Failed" in run.summary


@pytest.mark.parametrize(
    ("name", "value"),
    [("force-deploy", "maybe"), ("dry-run", "2"), ("pr-comment", "sure"), ("fail-on-reject", "True!")],
)
def test_a_bad_boolean_is_a_one_line_error_naming_the_input(
    action: ActionHarness, name: str, value: str
) -> None:
    run = action.run({name: value})
    assert run.rc == 2, run.stdout + run.stderr
    errors = run.commands("error")
    assert len(errors) == 1
    assert f"input '{name}'" in errors[0] and "%0A" not in errors[0]
    assert action.versions() == []


def test_yaml_spellings_and_the_underscore_spelling_are_read(action: ActionHarness) -> None:
    assert action.run().rc == 0
    action.write_workspace(WORSE)
    run = action.run(underscore_inputs={"force-deploy": "On"})  # INPUT_FORCE_DEPLOY, as /bin/sh would see it
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["decision"] == "forced"
    dry = action.run({"dry-run": "TRUE", "force-deploy": "true"})
    assert dry.rc == 0 and dry.outputs["decision"] == "forced" and dry.outputs["deployed"] == "false"


def test_empty_inputs_mean_default_and_params_yaml_is_not_overridden(action: ActionHarness) -> None:
    (action.workspace / "params.yaml").write_text("deployment:\n  min_improvement_threshold: 0.5\n")
    assert action.run().rc == 0
    action.write_workspace(BETTER)
    run = action.run()  # every settings input is "" (no defaults in action.yml): params.yaml wins
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["decision"] == "skip" and "0.5" in run.outputs["reason"]
    explicit = action.run({"min-improvement-threshold": "0.001"})
    assert explicit.outputs["decision"] == "deploy"


def test_every_input_is_accepted_by_the_shell(action: ActionHarness) -> None:
    # all inputs given (as the runner would with a full `with:` block), dry run so nothing ships
    values = {"dry-run": "true", "output-dir": "results/deployment", "config": "params.yaml"}
    (action.workspace / "params.yaml").write_text("deployment: {}\n")
    assert set(values) <= set(action_inputs())
    run = action.run(values)
    assert run.rc == 0, run.stdout + run.stderr


def test_forced_deploy_is_audited_and_rollback_mode_restores_the_previous_champion(
    action: ActionHarness,
) -> None:
    assert action.run().rc == 0
    action.write_workspace(WORSE)
    forced = action.run({"force-deploy": "true", "reason": "ship the hotfix"})
    assert forced.rc == 0, forced.stdout + forced.stderr
    info = json.loads(forced.result_files()["deployment_info.json"])
    assert (
        info["forced"]
        and info["context"]["actor"] == "octocat"
        and info["context"]["reason"] == "ship the hotfix"
    )
    assert info["skipped_checks"] and "score rule" in info["skipped_checks"][0]
    assert "octocat" in forced.summary and "Not checked because the deploy was forced" in forced.summary
    assert action.champion() == "2"

    rolled = action.run(
        {"mode": "rollback", "reason": "worse answers in prod"},
        event_name="workflow_dispatch",
        payload={"inputs": {}},
    )
    assert rolled.rc == 0, rolled.stdout + rolled.stderr
    assert (rolled.outputs["decision"], rolled.outputs["model-version"]) == ("rollback", "1")
    assert "Rolled back" in rolled.summary and "worse answers in prod" in rolled.summary
    assert action.champion() == "1"

    on_pr = action.run({"mode": "rollback"}, event_name="pull_request", payload=pr_payload())
    assert on_pr.rc == 2 and action.champion() == "1"
    bad = action.run({"mode": "rewind"})
    assert bad.rc == 2 and "input 'mode'" in bad.stdout
