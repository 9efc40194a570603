"""Deploy to the Hub end to end: the seed's MLflow layout (model/peft + tokenizer), a real merge,
the card, one tagged commit per version, the commit recorded in MLflow, and failure ordering:
a Hub failure leaves the champion where it was, and a re-run completes without duplicates."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi, ModelCard
from mlflow import MlflowClient

from tests.gatekit import metrics_scaled, run_gate
from tests.hub_server import iter_repo_files
from tests.modelfactory import make_lora_adapter, make_tiny_llama, save_tiny_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]


@pytest.fixture
def seed_run(tmp_path, mlflow_server):
    """A training run laid out as the seed logs it: the adapter under model/peft, the tokenizer."""
    base = make_tiny_llama(tmp_path / "base")
    adapter = make_lora_adapter(base, tmp_path / "art" / "peft", r=4, alpha=8)
    save_tiny_tokenizer(tmp_path / "tok")
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment(f"training-{tmp_path.name}")
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(adapter), "model/peft")
    client.log_artifacts(run.info.run_id, str(tmp_path / "tok"), "tokenizer")
    client.set_terminated(run.info.run_id)
    return {
        "mlflow_run_id": run.info.run_id,
        "tracking_uri": mlflow_server.uri,
        "dvc_stage": "fine_tuning",
        "model_name": "tiny-llama",
        "fine_tuned": True,
    }


@pytest.fixture
def gate(tmp_path, capsys, mlflow_server, hub_server, registry_name, experiment_name, monkeypatch, seed_run):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    repo = hub_server.new_repo_id("ship")

    def _run(name, sha, metrics=None, extra=()):
        monkeypatch.setenv("GITHUB_SHA", sha * 40)
        return run_gate(
            tmp_path,
            capsys,
            uri=mlflow_server.uri,
            registry=registry_name,
            experiment=experiment_name,
            metrics=metrics,
            location=seed_run,
            name=name,
            hub=True,
            extra=["--hf-model-id", repo, *extra],
        )

    _run.repo = repo
    return _run


def test_deploy_pushes_merged_model_card_and_tag(gate, hub_server, mlflow_server, registry_name, tmp_path):
    res = gate("first", "1", extra=["--hf-export-dir", str(tmp_path / "export")])
    assert res.code == 0, res.err
    info = res.info()
    assert info["hub"]["tag"] == "v1" and info["hub"]["url"].endswith(info["hub"]["commit"])
    files = dict(iter_repo_files(hub_server, gate.repo))
    assert {"config.json", "README.md", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    weights = [f for f in files if f.endswith(".safetensors")]
    assert weights and not any("lora" in f for f in files)
    # the export is exactly what was pushed
    exported = {
        p.relative_to(tmp_path / "export").as_posix(): p.read_bytes()
        for p in (tmp_path / "export").rglob("*")
        if p.is_file()
    }
    assert exported == {k: v for k, v in files.items() if k != ".gitattributes"}
    # the card's metadata, read back with huggingface_hub
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    card = ModelCard.load(api.hf_hub_download(gate.repo, "README.md", cache_dir=tmp_path / "cache"))
    assert card.data.library_name and "deploygate" in card.data.tags
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert set(results) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L precision", "Weighted score"}
    assert results["BLEU-4"] == pytest.approx(0.141) and results["Weighted score"] == pytest.approx(
        info["weighted_score"]
    )
    assert "rank r = 4, alpha = 8" in card.text  # read from the adapter config, not hard-coded
    assert "apply_chat_template" in card.text  # the tokenizer has a chat template
    assert api.list_repo_refs(gate.repo).tags[0].name == "v1"
    # the commit is recorded on the MLflow version
    mv = MlflowClient(tracking_uri=mlflow_server.uri).get_model_version(registry_name, "1")
    assert mv.tags["deploygate.hf_commit"] == info["hub"]["commit"]
    # the merged model loads and generates
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    out = model.generate(
        **{"input_ids": __import__("torch").tensor([[1, 5, 6]])}, max_new_tokens=3, do_sample=False
    )
    assert out.shape[1] == 6


def test_hub_failure_keeps_the_champion_and_rerun_completes(
    gate, hub_server, mlflow_server, registry_name, experiment_name
):
    assert gate("first", "1").code == 0
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    commits_before = len(hub_server.commits(gate.repo))
    hub_server.fail_next("POST", r"/api/models/.+/commit/", status=500, times=20)
    failed = gate("better", "2", metrics=metrics_scaled(0.02))
    hub_server.clear_faults()
    assert failed.code == 1, failed.err
    assert "Hub" in failed.err and "Traceback" not in failed.err
    assert client.get_model_version_by_alias(registry_name, "champion").version == "1"
    assert failed.info()["status"] == "failed" and failed.info()["error"]
    assert len(hub_server.commits(gate.repo)) == commits_before
    exp = client.get_experiment_by_name(experiment_name)
    failed_runs = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'", max_results=5)
    assert len(failed_runs) == 1 and "Hub" in failed_runs[0].data.tags["deploygate.error"]

    again = gate("better", "2", metrics=metrics_scaled(0.02))
    assert again.code == 0, again.err
    assert again.info()["registry"]["version"] == "2" and again.info()["hub"]["tag"] == "v2"
    assert client.get_model_version_by_alias(registry_name, "champion").version == "2"
    versions = client.search_model_versions(f"name='{registry_name}'", max_results=10)
    assert sorted(v.version for v in versions) == ["1", "2"]
    assert len(hub_server.commits(gate.repo)) == commits_before + 1

    # the same command once more: same version, no new Hub commit
    third = gate("better", "2", metrics=metrics_scaled(0.02), extra=["--force-deploy"])
    assert third.code == 0 and third.info()["registry"]["version"] == "2"
    assert len(hub_server.commits(gate.repo)) == commits_before + 1


def test_adapter_only_push(gate, hub_server):
    res = gate("adapter", "3", extra=["--no-merge"])
    assert res.code == 0, res.err
    files = dict(iter_repo_files(hub_server, gate.repo))
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    assert json.loads(files["adapter_config.json"])["r"] == 4
