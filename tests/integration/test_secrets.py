"""Secrets never leak: the CLI and the action, on success and on every error path, into any store.

Every token the gate can see gets a sentinel value (HF_TOKEN, HUGGINGFACE_HUB_TOKEN,
MLFLOW_TRACKING_PASSWORD, a password inside MLFLOW_TRACKING_URI, DAGSHUB_USER_TOKEN, DAGSHUB_TOKEN,
GITHUB_TOKEN; for the action also the github-token / hf-token / mlflow-tracking-password inputs).
After each run the sentinels are searched in stdout, stderr, the output folder, the step summary and
GITHUB_OUTPUT, and read back from the stores: MLflow run params / tags / metric names / every artifact,
registered versions' tags and descriptions, the registered model's tags, and on the Hub every file of
every repo touched and every commit message. `CHECKED` counts secret x place checks (README figure).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.action.harness import ActionHarness
from tests.gatekit import run_gate
from tests.hub_server import _Token, iter_repo_files

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]

CHECKED: list[tuple[str, str, str]] = []  # (scenario, place, secret) triples checked
SECRET_NAMES = ("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "uri-password", "DAGSHUB_USER_TOKEN",
                "DAGSHUB_TOKEN", "GITHUB_TOKEN", "input github-token", "input hf-token", "input mlflow-tracking-password")


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
                    places[f"run {rid} artifact {path.relative_to(folder)}"] = path.read_bytes().decode("latin-1")
    for model in client.search_registered_models(f"name = '{registry}'", max_results=5):
        places["registered model"] = repr((model.tags, model.description, model.aliases))
        for version in client.search_model_versions(f"name = '{registry}'", max_results=50):
            places[f"version {version.version}"] = repr((version.tags, version.description, version.source))
    return places


def hub_texts(hub_server: Any, repo: str | None) -> dict[str, str]:
    if not repo or repo not in hub_server.repos:
        return {}
    places = {f"hub file {name}": data.decode("latin-1") for name, data in iter_repo_files(hub_server, repo)}
    places["hub commit messages"] = repr([(c.title, getattr(c, "description", "")) for c in hub_server.commits(repo)])
    return places


def assert_nowhere(scenario: str, secrets: dict[str, str], places: dict[str, str]) -> None:
    for place, text in places.items():
        for name, value in secrets.items():
            CHECKED.append((scenario, place, name))
            assert value not in text, f"{scenario}: the {name} sentinel leaked into {place}"


def folder_texts(folder: Path, label: str) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {f"{label} {p.relative_to(folder)}": p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()}


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


def _cli(tmp_path, capsys, mlflow_server, registry, experiment, secrets, *, uri=None, location=None,
         metrics=None, extra=(), repo=None, name="run"):
    uri = uri or mlflow_server.uri.replace("http://", f"http://gate:{secrets['uri-password']}@")
    res = run_gate(tmp_path, capsys, uri=uri, registry=registry, experiment=experiment, metrics=metrics,
                   location=location, name=name, hub=repo is not None,
                   extra=[*(["--hf-model-id", repo] if repo else []), *extra])
    return res


def _check_cli(scenario, res, secrets, tmp_path, mlflow_server, registry, experiment, hub_server, repo) -> None:
    places = {"stdout": res.out, "stderr": res.err, **folder_texts(res.output_dir, "output")}
    places.update(mlflow_texts(mlflow_server.uri, experiment, registry, tmp_path / scenario.replace(" ", "-")))
    places.update(hub_texts(hub_server, repo))
    assert_nowhere(scenario, secrets, places)


def test_cli_deploy_to_the_hub(tmp_path, capsys, cli_secrets, seed_adapter, mlflow_server, hub_server,
                               registry_name, experiment_name) -> None:
    repo = hub_server.new_repo_id("secrets")
    res = _cli(tmp_path, capsys, mlflow_server, registry_name, experiment_name, cli_secrets,
               location={"local_path": str(seed_adapter)}, repo=repo, extra=["-v"])
    assert res.code == 0, res.err
    assert res.info()["hub"]["tag"] == "v1"
    _check_cli("cli deploy", res, cli_secrets, tmp_path, mlflow_server, registry_name, experiment_name, hub_server, repo)


@pytest.mark.parametrize("fault", ["hub 401", "hub 500", "merge failure"])
def test_cli_error_paths_after_writes(fault, tmp_path, capsys, monkeypatch, cli_secrets, seed_adapter, mlflow_server,
                                      hub_server, registry_name, experiment_name) -> None:
    repo = hub_server.new_repo_id("secrets")
    if fault == "hub 401":  # a token the Hub does not know
        monkeypatch.setenv("HF_TOKEN", cli_secrets["HF_TOKEN"] + "x")
        cli_secrets = {**cli_secrets, "HF_TOKEN (refused)": cli_secrets["HF_TOKEN"] + "x"}
    elif fault == "hub 500":
        hub_server.fail_next("POST", r"/api/models/.+/commit/", status=500, times=20,
                             body={"error": "boom"})
    else:
        (seed_adapter / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{corrupt")
    try:
        res = _cli(tmp_path, capsys, mlflow_server, registry_name, experiment_name, cli_secrets,
                   location={"local_path": str(seed_adapter)}, repo=repo, extra=["-v"])
    finally:
        hub_server.clear_faults()
    assert res.code in (1, 2), res.err
    _check_cli(f"cli {fault}", res, cli_secrets, tmp_path, mlflow_server, registry_name, experiment_name,
               hub_server, repo)


def test_cli_bad_input_and_unreachable_server(tmp_path, capsys, cli_secrets, mlflow_server, hub_server,
                                              registry_name, experiment_name) -> None:
    bad = _cli(tmp_path, capsys, mlflow_server, registry_name, experiment_name, cli_secrets, metrics="{oops",
               name="bad", extra=["-v"])
    assert bad.code == 2
    _check_cli("cli bad input", bad, cli_secrets, tmp_path, mlflow_server, registry_name, experiment_name, hub_server, None)
    down = _cli(tmp_path, capsys, mlflow_server, registry_name, experiment_name, cli_secrets, name="down",
                uri=f"http://gate:{cli_secrets['uri-password']}@127.0.0.1:9", extra=["-v"])
    assert down.code == 1 and "unreachable" in down.err
    _check_cli("cli mlflow unreachable", down, cli_secrets, tmp_path, mlflow_server, registry_name, experiment_name,
               hub_server, None)


@pytest.mark.parametrize("path", ["deploy to the hub", "bad input", "hub 401", "hub 500", "mlflow unreachable"])
def test_action_paths(path, tmp_path, mlflow_server, hub_server, registry_name, experiment_name, seed_adapter) -> None:
    import json
    import shutil

    secrets = {name: sentinel(name) for name in SECRET_NAMES}
    hub_server.tokens[secrets["input hf-token"]] = _Token(hub_server.user, "write")
    action = ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)
    shutil.rmtree(action.workspace / "model")
    shutil.copytree(seed_adapter, action.workspace / "model")
    repo = hub_server.new_repo_id("secrets")
    env = {name: secrets[name] for name in SECRET_NAMES[:7] if name != "uri-password"}
    env.update(HF_ENDPOINT=hub_server.url, DAGSHUB_USERNAME="gate", MLFLOW_TRACKING_USERNAME="gate",
               MLFLOW_TRACKING_URI=mlflow_server.uri.replace("http://", f"http://gate:{secrets['uri-password']}@"))
    inputs = {"skip-hf-push": "false", "hf-model-id": repo, "hf-token": secrets["input hf-token"],
              "github-token": secrets["input github-token"],
              "mlflow-tracking-password": secrets["input mlflow-tracking-password"]}
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
    expected = {"deploy to the hub": 0, "bad input": 2, "hub 401": 1, "hub 500": 1, "mlflow unreachable": 1}[path]
    assert run.rc == expected, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    masks = [i for i, line in enumerate(lines) if line.startswith("::add-mask::")]
    assert masks == list(range(len(masks))), "every ::add-mask:: must come before anything else"
    masked = {lines[i].removeprefix("::add-mask::") for i in masks}
    given = {*env.values(), *inputs.values()}
    missing = [n for n, v in secrets.items() if v in given and v not in masked]
    assert not missing, f"not masked: {missing}"
    places = {"stdout (after the masks)": "\n".join(lines[len(masks):]), "stderr": run.stderr,
              "step summary": run.summary, "GITHUB_OUTPUT": run.output_text,
              **{f"output {k}": v for k, v in run.result_files().items()}}
    places.update(mlflow_texts(mlflow_server.uri, experiment_name, registry_name, tmp_path / "mlflow-read"))
    places.update(hub_texts(hub_server, repo))
    assert_nowhere(f"action {path}", secrets, places)
    if path == "deploy to the hub":
        assert json.loads(run.result_files()["deployment_info.json"])["hub"]["tag"] == "v1"


def test_secret_checks_count() -> None:
    scenarios = sorted({s for s, _, _ in CHECKED})
    places = {(s, p) for s, p, _ in CHECKED}
    print(f"\nsecrets: {len(SECRET_NAMES)} kinds of secret; {len(CHECKED)} secret x place checks "
          f"({len(places)} places) over {len(scenarios)} scenarios: {', '.join(scenarios)}")
