"""Finding 1 of issue 9: model sources as MLflow 3 has them. The seed's training code, run under the
installed MLflow, logs a LoggedModel and leaves the run's `model/` empty; a version registered from
that folder holds nothing. The gate registers what holds the files, fetches adapter and tokenizer
from there, and refuses an empty source before writing anything."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from tests.gatekit import run_gate, write_json
from tests.hub_server import iter_repo_files
from tests.seedworld import SEED_EVAL, log_mlflow2_training_run, log_seed_training_run, registered_files

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning"),
    # mlflow.transformers' signature inference, on the training side (third-party, harmless)
    pytest.mark.filterwarnings("ignore:.*type hint is inferred:UserWarning"),
]


@pytest.fixture(scope="module")
def mlflow3_run(mlflow_server, tmp_path_factory):
    return log_seed_training_run(
        mlflow_server.uri, f"train-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("mlflow3")
    )


@pytest.fixture(scope="module")
def mlflow2_run(mlflow_server, tmp_path_factory):
    return log_mlflow2_training_run(
        mlflow_server.uri, f"train2-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("mlflow2")
    )


@pytest.fixture
def client(mlflow_server):
    return MlflowClient(tracking_uri=mlflow_server.uri)


def test_the_seed_training_code_leaves_the_run_folder_empty(mlflow3_run, client):
    """The premise, checked against the installed MLflow: the files are in the LoggedModel only."""
    run = client.get_run(mlflow3_run.run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [mlflow3_run.model_id]
    own = download_artifacts(artifact_uri=run.info.artifact_uri, tracking_uri=client.tracking_uri)
    assert sorted(p.name for p in Path(own).iterdir()) == ["model_info.json", "tokenizer"]
    names = {a.path for a in client.list_logged_model_artifacts(mlflow3_run.model_id)}
    assert {"MLmodel", "peft"} <= names


def test_mlflow3_logged_model_is_registered_and_shipped(
    mlflow3_run,
    client,
    tmp_path,
    capsys,
    mlflow_server,
    hub_server,
    registry_name,
    experiment_name,
    monkeypatch,
):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("GITHUB_SHA", "3" * 40)
    repo = hub_server.new_repo_id("seed3")
    res = run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry_name,
        experiment=experiment_name,
        metrics=SEED_EVAL,
        location=mlflow3_run.location,
        hub=True,
        extra=["--hf-model-id", repo],
    )
    assert res.code == 0, res.err
    mv = client.get_model_version(registry_name, "1")
    assert mv.source == f"models:/{mlflow3_run.model_id}"
    assert mv.run_id == mlflow3_run.run_id and mv.tags["deploygate.source_model_id"] == mlflow3_run.model_id
    # registered with its model_id: the server links the LoggedModel to the version
    assert registry_name in client.get_logged_model(mlflow3_run.model_id).tags["mlflow.modelVersions"]
    # what the registry now holds is the model, not an empty folder
    peft = registered_files(mlflow_server.uri, registry_name, "1", tmp_path / "held") / "peft"
    assert (peft / "adapter_config.json").is_file() and (
        peft / "adapter_model.safetensors"
    ).stat().st_size > 0
    assert "LoggedModel " + mlflow3_run.model_id in (res.output_dir / "deployment_logs.txt").read_text()
    # the Hub got the merged model with the fine-tune's tokenizer, fetched from the LoggedModel
    files = dict(iter_repo_files(hub_server, repo))
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(files)
    assert any(f.endswith(".safetensors") for f in files) and "adapter_config.json" not in files


def test_mlflow2_layout_is_registered_from_the_run(
    mlflow2_run, client, tmp_path, capsys, mlflow_server, registry_name, experiment_name
):
    res = run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry_name,
        experiment=experiment_name,
        metrics=SEED_EVAL,
        location=mlflow2_run.location,
    )
    assert res.code == 0, res.err
    mv = client.get_model_version(registry_name, "1")
    assert mv.run_id == mlflow2_run.run_id and mv.source.endswith(f"{mlflow2_run.run_id}/artifacts/model")
    held = registered_files(mlflow_server.uri, registry_name, "1", tmp_path / "held")
    assert json.loads((held / "peft" / "adapter_config.json").read_text())["r"] == 4


def test_an_explicit_logged_model_uri(
    mlflow3_run, client, tmp_path, capsys, mlflow_server, registry_name, experiment_name
):
    res = run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry_name,
        experiment=experiment_name,
        metrics=SEED_EVAL,
        location={},
        extra=["--model-uri", f"models:/{mlflow3_run.model_id}"],
    )
    assert res.code == 0, res.err
    mv = client.get_model_version(registry_name, "1")
    assert mv.source == f"models:/{mlflow3_run.model_id}" and mv.run_id == mlflow3_run.run_id


@pytest.mark.parametrize("case", ["no-model", "wrong-path", "empty-uri", "empty-local"])
def test_an_empty_source_is_refused_before_any_write(
    case, mlflow_server, tmp_path, capsys, client, registry_name, experiment_name
):
    extra: list[str] = []
    if case == "no-model":  # the seed's run with log_model failing silently (it catches and prints)
        run = log_seed_training_run(
            mlflow_server.uri, f"t-{uuid.uuid4().hex[:8]}", tmp_path / "w", with_model=False
        )
        location, expect = (
            run.location,
            [
                "holds no model under 'model'",
                "[model_info.json, tokenizer/]",
                "LoggedModels: none",
                run.run_id,
            ],
        )
    elif case == "wrong-path":
        run = client.create_run(client.create_experiment(f"t-{uuid.uuid4().hex[:8]}"))
        write_json(tmp_path / "art" / "peft" / "adapter_config.json", {"r": 4})
        client.log_artifacts(run.info.run_id, str(tmp_path / "art"), "adapter")
        location = {"mlflow_run_id": run.info.run_id}
        expect = ["holds no model under 'model'", "[adapter/]", "source-artifact-path"]
    elif case == "empty-uri":
        run = client.create_run(client.create_experiment(f"t-{uuid.uuid4().hex[:8]}"))
        write_json(tmp_path / "art" / "notes.json", {"x": 1})
        client.log_artifacts(run.info.run_id, str(tmp_path / "art"), "model")
        location, extra = {}, ["--model-uri", f"runs:/{run.info.run_id}/model"]
        expect = ["holds no model under 'model'", "[notes.json]"]
    else:
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "README.md").write_text("nothing here")
        location, expect = (
            {"local_path": str(tmp_path / "folder")},
            ["local_path", "holds no model", "[README.md]"],
        )
    res = run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry_name,
        experiment=experiment_name,
        metrics=SEED_EVAL,
        location=location,
        extra=extra,
    )
    assert res.code == 2, res.err
    error = [line for line in res.err.splitlines() if "error" in line]
    assert len(error) == 1 and all(e in error[0] for e in expect), error
    assert client.get_experiment_by_name(experiment_name) is None
    assert client.search_registered_models(f"name = '{registry_name}'") == []
    assert not res.output_dir.exists()
