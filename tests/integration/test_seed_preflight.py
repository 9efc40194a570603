"""Finding 5 of issue 9: late failures left debris. The Hub token, write access to the repo and the
base model are checked before anything is registered or merged; a deploy that fails after
registering still names its version in deployment_info.json and says what the re-run will do."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from tests.gatekit import run_gate
from tests.modelfactory import make_lora_adapter, make_tiny_llama, save_tiny_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_server):
    """Two runs in the seed's MLflow 2 layout: one adapter on a local base, one naming a Hub base that does not exist."""
    root = tmp_path_factory.mktemp("preflight")
    base = make_tiny_llama(root / "base", shards=1)
    save_tiny_tokenizer(root / "tok")
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment(f"training-{root.name}")
    locations = {}
    for name, base_ref in (("local", None), ("missing-base", "dg-org/no-such-base")):
        adapter = make_lora_adapter(base, root / name / "peft", r=4, alpha=8)
        if base_ref:
            config = json.loads((adapter / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = base_ref
            (adapter / "adapter_config.json").write_text(json.dumps(config))
        run = client.create_run(exp)
        client.log_artifacts(run.info.run_id, str(adapter), "model/peft")
        client.log_artifacts(run.info.run_id, str(root / "tok"), "tokenizer")
        client.set_terminated(run.info.run_id)
        locations[name] = {"mlflow_run_id": run.info.run_id, "tracking_uri": mlflow_server.uri}
    return locations


@pytest.fixture
def gate(tmp_path, capsys, mlflow_server, hub_server, registry_name, experiment_name, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("GITHUB_SHA", "5" * 40)

    def _run(name, location, repo, token):
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        else:
            monkeypatch.delenv("HF_TOKEN", raising=False)
        return run_gate(
            tmp_path,
            capsys,
            uri=mlflow_server.uri,
            registry=registry_name,
            experiment=experiment_name,
            location=location,
            name=name,
            hub=True,
            extra=["--hf-model-id", repo],
        )

    return _run


@pytest.mark.parametrize("case", ["no-token", "read-only-token", "other-namespace", "missing-base"])
def test_preflight_fails_before_the_first_write(
    case, gate, trained, hub_server, mlflow_server, registry_name, experiment_name
):
    repo = hub_server.new_repo_id("pre") if case != "other-namespace" else "someone-else/model"
    token = {"no-token": None, "read-only-token": hub_server.readonly_token}.get(case, hub_server.token)
    location = trained["missing-base" if case == "missing-base" else "local"]
    res = gate(case, location, repo, token)
    code, needle = {
        "no-token": (2, "HF_TOKEN"),
        "read-only-token": (1, "read-only"),
        "other-namespace": (1, "cannot create repos under 'someone-else'"),
        "missing-base": (2, "'dg-org/no-such-base' is not a model on"),
    }[case]
    assert res.code == code, res.err
    errors = [line for line in res.err.splitlines() if "error" in line]
    assert len(errors) == 1 and needle in errors[0], errors
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    assert client.get_experiment_by_name(experiment_name) is None  # no gate run
    assert client.search_registered_models(f"name = '{registry_name}'") == []  # no version
    assert not res.output_dir.exists()
    assert hub_server.requests_matching("POST", f"/api/models/{repo}/commit") == []  # nothing pushed


def test_a_failure_after_registering_names_the_version_and_the_rerun(
    gate, trained, hub_server, mlflow_server, registry_name
):
    repo = hub_server.new_repo_id("late")
    hub_server.fail_next("POST", r"/api/models/.+/commit/", status=500, times=20)
    failed = gate("late", trained["local"], repo, hub_server.token)
    hub_server.clear_faults()
    assert failed.code == 1, failed.err
    info = failed.info()
    assert info["status"] == "failed" and info["registry"]["version"] == "1"
    assert (info["mlflow_registered"], info["mlflow_model_version"], info["huggingface_deployed"]) == (
        True,
        "1",
        False,
    )
    assert "reuses v1 instead of registering another version" in info["rerun"] and repo in info["rerun"]
    again = gate("late", trained["local"], repo, hub_server.token)
    assert again.code == 0, again.err
    assert again.info()["registry"]["version"] == "1" and again.info()["rerun"] is None
    assert again.info()["huggingface_deployed"] is True
    assert [
        v.version
        for v in MlflowClient(tracking_uri=mlflow_server.uri).search_model_versions(
            f"name = '{registry_name}'", max_results=5
        )
    ] == ["1"]
