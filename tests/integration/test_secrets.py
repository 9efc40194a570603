"""Secrets never leak: the CLI and the action, on success and on every error path, into any store.

Every token the gate can see gets a sentinel value (HF_TOKEN, HUGGINGFACE_HUB_TOKEN,
MLFLOW_TRACKING_PASSWORD, a password inside MLFLOW_TRACKING_URI, DAGSHUB_USER_TOKEN, DAGSHUB_TOKEN,
GITHUB_TOKEN; for the action also the github-token / hf-token / mlflow-tracking-password inputs).
After each run the sentinels are searched in stdout, stderr, the output folder, the step summary and
GITHUB_OUTPUT, and read back from the stores: MLflow run params / tags / metric names / every artifact,
registered versions' tags and descriptions, the registered model's tags, and on the Hub every file of
every repo touched and every commit message.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.action.harness import ActionHarness, pr_payload
from tests.faultproxy import FaultProxy
from tests.gatekit import run_gate
from tests.github_api_server import github_api  # noqa: F401  (fixture)
from tests.hub_server import _Token, iter_repo_files

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]

SECRET_NAMES = (
    "HF_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "uri-password",
    "DAGSHUB_USER_TOKEN",
    "DAGSHUB_TOKEN",
    "GITHUB_TOKEN",
    "input github-token",
    "input hf-token",
    "input mlflow-tracking-password",
)


def sentinel(name: str) -> str:
    return f"sntl{''.join(c for c in name if c.isalnum()).lower()}{uuid.uuid4().hex}"


def mlflow_texts(uri: str, experiment: str, registry: str, tmp: Path) -> dict[str, str]:
    """Everything the gate can have written to MLflow, as text, by place."""
    client = MlflowClient(tracking_uri=uri)
    places: dict[str, str] = {}
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        for run in client.search_runs([exp.experiment_id], max_results=50):
            rid = run.info.run_id
            places[f"run {rid} params"] = repr(run.data.params)
            places[f"run {rid} tags"] = repr(run.data.tags)
            places[f"run {rid} metric names"] = repr(sorted(run.data.metrics))
            folder = Path(client.download_artifacts(rid, "", str(tmp / f"artifacts-{rid}")))
            for path in folder.rglob("*"):
                if path.is_file():
                    places[f"run {rid} artifact {path.relative_to(folder)}"] = path.read_bytes().decode(
                        "latin-1"
                    )
    for model in client.search_registered_models(f"name = '{registry}'", max_results=5):
        places["registered model"] = repr((model.tags, model.description, model.aliases))
        for version in client.search_model_versions(f"name = '{registry}'", max_results=50):
            places[f"version {version.version}"] = repr((version.tags, version.description, version.source))
    return places


def hub_texts(hub_server: Any, repo: str | None) -> dict[str, str]:
    if not repo or repo not in hub_server.repos:
        return {}
    places = {f"hub file {name}": data.decode("latin-1") for name, data in iter_repo_files(hub_server, repo)}
    places["hub commit messages"] = repr(
        [(c.title, getattr(c, "description", "")) for c in hub_server.commits(repo)]
    )
    return places


def assert_nowhere(scenario: str, secrets: dict[str, str], places: dict[str, str]) -> None:
    # a check over no secret or no place would pass whatever leaked
    assert secrets and all(secrets.values()), f"{scenario}: no secret to look for"
    assert places, f"{scenario}: nothing the gate wrote was found to look in"
    for place, text in places.items():
        for name, value in secrets.items():
            assert value not in text, f"{scenario}: the {name} sentinel leaked into {place}"


def folder_texts(folder: Path, label: str) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        f"{label} {p.relative_to(folder)}": p.read_bytes().decode("latin-1")
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def cli_secrets(monkeypatch, mlflow_server, hub_server) -> dict[str, str]:
    """Sentinels in the environment; the HF ones are real write tokens on the local Hub server."""
    secrets = {name: sentinel(name) for name in SECRET_NAMES[:7]}
    for name in ("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN"):
        hub_server.tokens[secrets[name]] = _Token(hub_server.user, "write")
        monkeypatch.setenv(name, secrets[name])
    for name in ("MLFLOW_TRACKING_PASSWORD", "DAGSHUB_USER_TOKEN", "DAGSHUB_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.setenv(name, secrets[name])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "gate")
    monkeypatch.setenv("DAGSHUB_USERNAME", "gate")
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("GITHUB_SHA", uuid.uuid4().hex + "0" * 8)
    return secrets


@pytest.fixture
def seed_adapter(tmp_path) -> Path:
    from tests.modelfactory import make_lora_adapter, make_tiny_llama, save_tiny_tokenizer

    base = make_tiny_llama(tmp_path / "base", shards=1)
    adapter = make_lora_adapter(base, tmp_path / "adapter", r=2, alpha=4, target_modules=("q_proj",))
    save_tiny_tokenizer(adapter)
    return adapter


def _cli(
    tmp_path,
    capsys,
    mlflow_server,
    registry,
    experiment,
    secrets,
    *,
    uri=None,
    location=None,
    metrics=None,
    extra=(),
    repo=None,
    name="run",
):
    uri = uri or mlflow_server.uri.replace("http://", f"http://gate:{secrets['uri-password']}@")
    res = run_gate(
        tmp_path,
        capsys,
        uri=uri,
        registry=registry,
        experiment=experiment,
        metrics=metrics,
        location=location,
        name=name,
        hub=repo is not None,
        extra=[*(["--hf-model-id", repo] if repo else []), *extra],
    )
    return res


def _check_cli(
    scenario, res, secrets, tmp_path, mlflow_server, registry, experiment, hub_server, repo
) -> None:
    places = {"stdout": res.out, "stderr": res.err, **folder_texts(res.output_dir, "output")}
    places.update(
        mlflow_texts(mlflow_server.uri, experiment, registry, tmp_path / scenario.replace(" ", "-"))
    )
    places.update(hub_texts(hub_server, repo))
    assert_nowhere(scenario, secrets, places)


def test_cli_deploy_to_the_hub(
    tmp_path, capsys, cli_secrets, seed_adapter, mlflow_server, hub_server, registry_name, experiment_name
) -> None:
    repo = hub_server.new_repo_id("secrets")
    res = _cli(
        tmp_path,
        capsys,
        mlflow_server,
        registry_name,
        experiment_name,
        cli_secrets,
        location={"local_path": str(seed_adapter)},
        repo=repo,
        extra=["-v"],
    )
    assert res.code == 0, res.err
    assert res.info()["hub"]["tag"] == "v1"
    _check_cli(
        "cli deploy",
        res,
        cli_secrets,
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        repo,
    )


@pytest.mark.parametrize("fault", ["hub 401", "hub 500", "merge failure"])
def test_cli_error_paths_after_writes(
    fault,
    tmp_path,
    capsys,
    monkeypatch,
    cli_secrets,
    seed_adapter,
    mlflow_server,
    hub_server,
    registry_name,
    experiment_name,
) -> None:
    repo = hub_server.new_repo_id("secrets")
    if fault == "hub 401":  # a token the Hub does not know
        monkeypatch.setenv("HF_TOKEN", cli_secrets["HF_TOKEN"] + "x")
        cli_secrets = {**cli_secrets, "HF_TOKEN (refused)": cli_secrets["HF_TOKEN"] + "x"}
    elif fault == "hub 500":
        hub_server.fail_next("POST", r"/api/models/.+/commit/", status=500, times=20, body={"error": "boom"})
    else:
        (seed_adapter / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{corrupt")
    try:
        res = _cli(
            tmp_path,
            capsys,
            mlflow_server,
            registry_name,
            experiment_name,
            cli_secrets,
            location={"local_path": str(seed_adapter)},
            repo=repo,
            extra=["-v"],
        )
    finally:
        hub_server.clear_faults()
    assert res.code in (1, 2), res.err
    _check_cli(
        f"cli {fault}",
        res,
        cli_secrets,
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        repo,
    )


def test_cli_bad_input_and_unreachable_server(
    tmp_path, capsys, cli_secrets, mlflow_server, hub_server, registry_name, experiment_name
) -> None:
    bad = _cli(
        tmp_path,
        capsys,
        mlflow_server,
        registry_name,
        experiment_name,
        cli_secrets,
        metrics="{oops",
        name="bad",
        extra=["-v"],
    )
    assert bad.code == 2
    _check_cli(
        "cli bad input",
        bad,
        cli_secrets,
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        None,
    )
    down = _cli(
        tmp_path,
        capsys,
        mlflow_server,
        registry_name,
        experiment_name,
        cli_secrets,
        name="down",
        uri=f"http://gate:{cli_secrets['uri-password']}@127.0.0.1:9",
        extra=["-v"],
    )
    assert down.code == 1 and "unreachable" in down.err
    _check_cli(
        "cli mlflow unreachable",
        down,
        cli_secrets,
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        None,
    )


VERSION_CREATE = r"/model-versions/create$"
ALIAS = r"/registered-models/alias$"


@pytest.fixture
def mlflow_proxy(mlflow_server) -> Any:
    """The real MLflow server behind the fault proxy (a 503 at one step of the run)."""
    proxy = FaultProxy(mlflow_server.uri).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("fault", ["mlflow 503 on version create", "mlflow 503 on alias move"])
def test_cli_mlflow_fails_mid_run(
    fault,
    tmp_path,
    capsys,
    monkeypatch,
    cli_secrets,
    seed_adapter,
    mlflow_server,
    mlflow_proxy,
    hub_server,
    registry_name,
    experiment_name,
) -> None:
    """MLflow's own error text names the request URL, credentials included ("API request to
    http://gate:PW@..."): it must reach no output, file, tag or Hub commit."""
    repo = hub_server.new_repo_id("secrets") if "alias" in fault else None
    mlflow_proxy.fail("POST", VERSION_CREATE if "create" in fault else ALIAS, 503, times=-1)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # the retries, without their waits
    uri = mlflow_proxy.url.replace("http://", f"http://gate:{cli_secrets['uri-password']}@")
    res = _cli(
        tmp_path,
        capsys,
        mlflow_server,
        registry_name,
        experiment_name,
        cli_secrets,
        uri=uri,
        location={"local_path": str(seed_adapter)},
        repo=repo,
        extra=["-v"],
    )
    assert res.code == 1, res.err
    assert mlflow_proxy.injected >= 2, "MLflow's retries did not run into the fault"
    assert "503" in res.err or "error responses" in res.err, res.err
    assert res.info()["status"] == "failed" and res.info()["error"]
    _check_cli(
        f"cli {fault}",
        res,
        cli_secrets,
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        repo,
    )


def _check_action(
    scenario,
    run,
    secrets,
    given,
    tmp_path,
    mlflow_server,
    registry,
    experiment,
    hub_server,
    repo,
    extra_places=None,
) -> None:
    lines = run.stdout.splitlines()
    masks = [i for i, line in enumerate(lines) if line.startswith("::add-mask::")]
    assert masks == list(range(len(masks))), "every ::add-mask:: must come before anything else"
    masked = {lines[i].removeprefix("::add-mask::") for i in masks}
    missing = [n for n, v in secrets.items() if v in given.values() and v not in masked]
    assert not missing, f"not masked: {missing}"
    places = {
        "stdout (after the masks)": "\n".join(lines[len(masks) :]),
        "stderr": run.stderr,
        "step summary": run.summary,
        "GITHUB_OUTPUT": run.output_text,
        **{f"output {k}": v for k, v in run.result_files().items()},
        **(extra_places or {}),
    }
    places.update(mlflow_texts(mlflow_server.uri, experiment, registry, tmp_path / "mlflow-read"))
    places.update(hub_texts(hub_server, repo))
    assert_nowhere(scenario, secrets, places)


@pytest.mark.parametrize(
    "path", ["deploy to the hub", "bad input", "hub 401", "hub 500", "mlflow unreachable"]
)
def test_action_paths(
    path, tmp_path, mlflow_server, hub_server, registry_name, experiment_name, seed_adapter
) -> None:
    import json
    import shutil

    secrets = {name: sentinel(name) for name in SECRET_NAMES}
    hub_server.tokens[secrets["input hf-token"]] = _Token(hub_server.user, "write")
    action = ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)
    shutil.rmtree(action.workspace / "model")
    shutil.copytree(seed_adapter, action.workspace / "model")
    repo = hub_server.new_repo_id("secrets")
    env = {name: secrets[name] for name in SECRET_NAMES[:7] if name != "uri-password"}
    env.update(
        HF_ENDPOINT=hub_server.url,
        DAGSHUB_USERNAME="gate",
        MLFLOW_TRACKING_USERNAME="gate",
        MLFLOW_TRACKING_URI=mlflow_server.uri.replace("http://", f"http://gate:{secrets['uri-password']}@"),
    )
    inputs = {
        "skip-hf-push": "false",
        "hf-model-id": repo,
        "hf-token": secrets["input hf-token"],
        "github-token": secrets["input github-token"],
        "mlflow-tracking-password": secrets["input mlflow-tracking-password"],
    }
    if path == "bad input":
        (action.workspace / "results" / "evaluations" / "metrics.json").write_text("[1, 2")
    elif path == "hub 401":
        inputs["hf-token"] = secrets["input hf-token"] + "x"
        secrets["input hf-token (refused)"] = inputs["hf-token"]
    elif path == "hub 500":
        hub_server.fail_next("POST", r"/api/models/.+/commit/", status=500, times=20)
    elif path == "mlflow unreachable":
        env["MLFLOW_TRACKING_URI"] = f"http://gate:{secrets['uri-password']}@127.0.0.1:9"
    try:
        run = action.run(inputs, env={**env, "RUNNER_DEBUG": "1"})
    finally:
        hub_server.clear_faults()
    expected = {"deploy to the hub": 0, "bad input": 2, "hub 401": 1, "hub 500": 1, "mlflow unreachable": 1}[
        path
    ]
    assert run.rc == expected, run.stdout + run.stderr
    _check_action(
        f"action {path}",
        run,
        secrets,
        {**env, **inputs},
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        repo,
    )
    if path == "deploy to the hub":
        assert json.loads(run.result_files()["deployment_info.json"])["hub"]["tag"] == "v1"


@pytest.mark.parametrize(
    "fault",
    [
        "mlflow 503 on version create",
        "mlflow 503 on alias move",
        "pull request, mlflow 503 on the champion read",
    ],
)
def test_action_mlflow_fails_mid_run(
    fault,
    tmp_path,
    mlflow_server,
    mlflow_proxy,
    hub_server,
    github_api,  # noqa: F811
    registry_name,
    experiment_name,
    seed_adapter,
) -> None:
    """The run fails on MLflow's error text, which names the URL with its credentials: the annotation,
    the `reason` output, the step summary, the PR comment and every file and tag must not show them."""
    import shutil

    secrets = {name: sentinel(name) for name in SECRET_NAMES}
    hub_server.tokens[secrets["input hf-token"]] = _Token(hub_server.user, "write")
    github_api.state.token = secrets["input github-token"]
    action = ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)
    shutil.rmtree(action.workspace / "model")
    shutil.copytree(seed_adapter, action.workspace / "model")
    pull_request = fault.startswith("pull request")
    repo = None if pull_request else hub_server.new_repo_id("secrets")
    if pull_request:  # a champion exists, so the PR run reads it (and fails on the 503)
        first = action.run({"registry-name": registry_name}, env={"MLFLOW_TRACKING_URI": mlflow_server.uri})
        assert first.rc == 0, first.stdout + first.stderr
    path = {
        "mlflow 503 on version create": ("POST", VERSION_CREATE),
        "mlflow 503 on alias move": ("POST", ALIAS),
        "pull request, mlflow 503 on the champion read": ("GET", ALIAS),
    }[fault]
    mlflow_proxy.fail(*path, 503, times=-1)
    env = {name: secrets[name] for name in SECRET_NAMES[:7] if name != "uri-password"}
    env.update(
        HF_ENDPOINT=hub_server.url,
        DAGSHUB_USERNAME="gate",
        MLFLOW_TRACKING_USERNAME="gate",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",
        MLFLOW_TRACKING_URI=mlflow_proxy.url.replace("http://", f"http://gate:{secrets['uri-password']}@"),
    )
    inputs = {
        "hf-token": secrets["input hf-token"],
        "github-token": secrets["input github-token"],
        "mlflow-tracking-password": secrets["input mlflow-tracking-password"],
    }
    if repo:
        inputs.update({"skip-hf-push": "false", "hf-model-id": repo})
    run = action.run(
        inputs,
        env={**env, "RUNNER_DEBUG": "1"},
        event_name="pull_request" if pull_request else "push",
        payload=pr_payload(9) if pull_request else None,
        api=github_api,
    )
    assert run.rc == 1, run.stdout + run.stderr
    assert mlflow_proxy.injected >= 2, "the fault did not fire"
    assert run.outputs["reason"] and "MLflow" in run.outputs["reason"], run.outputs
    comments = github_api.state.bodies("octo/gate", 9)
    if pull_request:
        assert comments, "the failure was not commented on the pull request"
    _check_action(
        f"action {fault}",
        run,
        secrets,
        {**env, **inputs},
        tmp_path,
        mlflow_server,
        registry_name,
        experiment_name,
        hub_server,
        repo,
        extra_places={"PR comment": "\n".join(comments)},
    )
