"""Secrets: masked before anything else is printed, and never written anywhere the action writes."""

from __future__ import annotations

import uuid

import pytest

from deploygate.shells import action as action_shell
from tests.action.harness import ActionHarness, ActionRun, pr_payload
from tests.github_api_server import GitHubApi

pytestmark = pytest.mark.slow


def sentinel(name: str) -> str:
    return f"sentinel{name.replace('-', '').replace('_', '')}{uuid.uuid4().hex}"


def assert_nowhere(run: ActionRun, secrets: list[str]) -> None:
    lines = run.stdout.splitlines()
    masks = [i for i, line in enumerate(lines) if line.startswith("::add-mask::")]
    assert masks == list(range(len(masks))), "every ::add-mask:: must come before anything else is printed"
    masked = {lines[i].removeprefix("::add-mask::") for i in masks}
    places = {
        "stdout (unmasked)": "\n".join(lines[len(masks) :]),
        "stderr": run.stderr,
        "step summary": run.summary,
        "GITHUB_OUTPUT": run.output_text,
        **{f"results/deployment/{name}": text for name, text in run.result_files().items()},
    }
    for secret in secrets:
        assert secret in masked, f"{secret[:20]}... was not masked"
        for where, text in places.items():
            assert secret not in text, f"a secret leaked into {where}"


def test_no_secret_leaks_on_a_pull_request(action: ActionHarness, github_api: GitHubApi) -> None:
    token = sentinel("github")
    github_api.state.token = token
    env = {
        name: sentinel(name)
        for name in (
            "HF_TOKEN",
            "HUGGINGFACE_HUB_TOKEN",
            "DAGSHUB_USER_TOKEN",
            "DAGSHUB_TOKEN",
            "GITHUB_TOKEN",
        )
    }
    inputs = {
        "github-token": token,
        "hf-token": sentinel("hf-input"),
        "mlflow-tracking-password": sentinel("mlflow-pw"),
        "mlflow-tracking-username": "someone",
    }
    secrets = [*env.values(), *(v for k, v in inputs.items() if k != "mlflow-tracking-username")]
    env["DAGSHUB_USERNAME"] = "someone"  # not a secret: with DAGSHUB_*_TOKEN it becomes the MLflow login
    run = action.run(inputs, event_name="pull_request", payload=pr_payload(5), env=env, api=github_api)
    assert run.rc == 0, run.stdout + run.stderr
    assert any(auth == f"Bearer {token}" for _, _, auth in github_api.state.requests), (
        "the github token was used"
    )
    assert_nowhere(run, secrets)


def test_no_secret_leaks_from_a_password_in_the_tracking_uri(action: ActionHarness) -> None:
    password = sentinel("uri")
    uri = action.mlflow.uri.replace("http://", f"http://gate:{password}@")
    run = action.run(env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_PASSWORD": sentinel("pw")})
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["deployed"] == "true"
    assert_nowhere(run, [password])


def test_no_secret_leaks_when_the_server_is_unreachable(action: ActionHarness) -> None:
    password, token = sentinel("uri"), sentinel("hf")
    run = action.run(env={"MLFLOW_TRACKING_URI": f"http://gate:{password}@127.0.0.1:9", "HF_TOKEN": token})
    assert run.rc == 1, run.stdout + run.stderr
    assert_nowhere(run, [password, token])


def test_the_secret_list_covers_the_app_and_every_secret_input() -> None:
    from deploygate.bootstrap import SECRET_ENV as APP_SECRET_ENV

    assert set(APP_SECRET_ENV) <= set(action_shell.SECRET_ENV)
    for item in action_shell.ACTION_INPUTS:
        if item.secret:
            assert set(action_shell.input_keys(item.name)) <= set(action_shell.SECRET_ENV)
