"""A Hub tag is never trusted by its name: `v1` of a registered model that was deleted and recreated
(versions restart at 1), or of another registered model pushing to the same repo, is not this
model's `v1`. Each tag's commit carries `deploygate.json`, the registry identity it was made for
(registered model, version, the version's creation time, candidate key, gate run) and the files'
digests; a deploy, the Hub sync after a failure and a rollback all refuse a tag made for another
version, naming both and the fix. Tags pushed before the record existed are trusted only when the
MLflow version records their commit (`deploygate.hf_commit`)."""

from __future__ import annotations

import json
import random

import pytest
from huggingface_hub import HfApi
from mlflow import MlflowClient

from deploygate.adapters.hf_hub import HubPublisher
from deploygate.shells.cli import main
from tests.gatekit import metrics_scaled, run_gate
from tests.hub_server import iter_repo_files
from tests.integration.test_ship import seed_run  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]


@pytest.fixture
def hub_env(monkeypatch, hub_server):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)


def _gate(
    tmp_path,
    capsys,
    monkeypatch,
    mlflow_server,
    registry,
    experiment,
    location,
    repo,
    name,
    sha,
    *,
    delta=0.0,
    extra=(),
):
    monkeypatch.setenv("GITHUB_SHA", sha * 40)
    return run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry,
        experiment=experiment,
        metrics=metrics_scaled(delta),
        location=location,
        name=name,
        hub=True,
        extra=[*(["--hf-model-id", repo] if repo else ["--skip-hf-push"]), *extra],
    )


def _files(hub_server, repo, revision="main"):
    return dict(iter_repo_files(hub_server, repo, revision))


@pytest.fixture
def recreated(
    tmp_path,
    capsys,
    monkeypatch,
    hub_env,
    hub_server,
    mlflow_server,
    registry_name,
    experiment_name,
    seed_run,  # noqa: F811  (the fixture)
):
    """A repo where the registered model pushed v1 and v2 (other files) before it was deleted and
    recreated; returns the gate (to run this registry against the repo) and the repo."""
    repo = hub_server.new_repo_id("identity")

    def gate(name, sha, **kw):
        return _gate(
            tmp_path,
            capsys,
            monkeypatch,
            mlflow_server,
            registry_name,
            experiment_name,
            seed_run,
            kw.pop("repo", repo),
            name,
            sha,
            **kw,
        )

    assert gate("old-v1", "1").code == 0
    assert gate("old-v2", "2", delta=0.02, extra=["--no-merge"]).code == 0  # other files than v1
    gate.old_v2 = _files(hub_server, repo)
    MlflowClient(tracking_uri=mlflow_server.uri).delete_registered_model(
        registry_name
    )  # versions restart at 1
    return gate, repo


def test_a_recreated_model_does_not_reuse_the_old_models_tags(
    recreated, hub_server, mlflow_server, registry_name
):
    gate, repo = recreated
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    old_v2 = gate.old_v2
    record = json.loads(old_v2["deploygate.json"])
    assert record["registry"]["name"] == registry_name and record["registry"]["version"] == "2"
    assert set(record["files"]) == set(old_v2) - {"deploygate.json", ".gitattributes"}
    commits = len(hub_server.commits(repo))
    first = gate("new-v1", "3", repo=None)  # the new v1 deploys without the Hub: it is the champion
    assert first.code == 0 and first.info()["registry"]["version"] == "1"
    refused = gate("new-v2", "4", delta=0.03)  # the new v2 finds the old model's tag v2
    assert refused.code == 1, refused.err
    line = next(x for x in refused.err.splitlines() if x.startswith("deploygate: error"))
    assert "tag v2" in line and "was made for" in line and "Fix:" in line, line
    assert line.count(f"'{registry_name}' v2") == 2, line  # both identities are named
    # nothing moved: the new champion is still v1, and the Hub's main was not "repaired" to the old
    # model's v1 tag (the sync after the failure refuses it too)
    assert client.get_model_version_by_alias(registry_name, "champion").version == "1"
    assert _files(hub_server, repo) == old_v2 and len(hub_server.commits(repo)) == commits
    assert refused.info()["status"] == "failed"

    # the fix the message gives: delete the stale tags, then the same command completes
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    for tag in ("v1", "v2"):
        api.delete_tag(repo, tag=tag)
    again = gate("new-v2", "4", delta=0.03)
    assert again.code == 0, again.err
    assert again.info()["registry"]["version"] == "2" and again.info()["hub"]["tag"] == "v2"
    new_record = json.loads(_files(hub_server, repo, "v2")["deploygate.json"])
    assert new_record["registry"]["created_ms"] != record["registry"]["created_ms"]
    assert client.get_model_version_by_alias(registry_name, "champion").version == "2"


def test_another_registered_model_on_the_same_repo_is_refused(
    tmp_path,
    capsys,
    monkeypatch,
    hub_env,
    hub_server,
    mlflow_server,
    registry_name,
    experiment_name,
    seed_run,  # noqa: F811  (the fixture)
):
    repo = hub_server.new_repo_id("identity")
    assert (
        _gate(
            tmp_path,
            capsys,
            monkeypatch,
            mlflow_server,
            registry_name,
            experiment_name,
            seed_run,
            repo,
            "a",
            "1",
        ).code
        == 0
    )
    before = _files(hub_server, repo)
    renamed = registry_name + "-renamed"
    res = _gate(
        tmp_path, capsys, monkeypatch, mlflow_server, renamed, experiment_name, seed_run, repo, "b", "2"
    )
    assert res.code == 1, res.err
    assert f"'{registry_name}' v1" in res.err and f"'{renamed}' v1" in res.err, res.err
    assert _files(hub_server, repo) == before
    assert MlflowClient(tracking_uri=mlflow_server.uri).get_registered_model(renamed).aliases == {}


def test_rollback_refuses_a_tag_made_for_another_model(
    recreated, hub_server, mlflow_server, registry_name, experiment_name, tmp_path, capsys
):
    gate, repo = recreated
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    assert gate("new-v1", "3", repo=None).code == 0
    assert gate("new-v2", "4", delta=0.01, repo=None).code == 0
    assert gate("new-v3", "5", delta=0.02).code == 0  # no old v3 tag: pushed and promoted
    v3_files = _files(hub_server, repo)
    capsys.readouterr()
    code = main(
        [
            "rollback",
            "--registry-name",
            registry_name,
            "--experiment-name",
            experiment_name,
            "--mlflow-tracking-uri",
            mlflow_server.uri,
            "--hf-model-id",
            repo,
            "--output-dir",
            str(tmp_path / "rb"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "tag v2" in err and "was made for" in err, err
    assert client.get_model_version_by_alias(registry_name, "champion").version == "3"
    assert _files(hub_server, repo) == v3_files


def test_tags_pushed_before_the_record_existed(
    tmp_path,
    capsys,
    monkeypatch,
    hub_env,
    hub_server,
    mlflow_server,
    registry_name,
    experiment_name,
    seed_run,  # noqa: F811  (the fixture)
):
    """A repo pushed by an earlier release has tags without deploygate.json: trusted when the
    MLflow version records that commit (a re-run), refused when nothing says whose they are."""
    publisher = HubPublisher(hub_server.token, hub_server.url)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "model.safetensors").write_bytes(random.Random(7).randbytes(4096))
    (legacy / "README.md").write_text("---\nlicense: apache-2.0\n---\nan earlier push\n")

    # nothing records whose tag this is: refused
    stranger = hub_server.new_repo_id("legacy")
    publisher.push(
        stranger,
        legacy,
        commit_message="deploygate: other v1, weighted score 0.1 (deploy)",
        private=False,
        tag="v1",
    )
    res = _gate(
        tmp_path,
        capsys,
        monkeypatch,
        mlflow_server,
        registry_name,
        experiment_name,
        seed_run,
        stranger,
        "stranger",
        "1",
    )
    assert res.code == 1 and "no deploygate.json" in res.err, res.err

    # the version records the tag's commit (as every earlier release did after its push): trusted
    own = hub_server.new_repo_id("legacy")
    pushed = publisher.push(
        own,
        legacy,
        commit_message=f"deploygate: {registry_name} v1, weighted score 0.2 (deploy)",
        private=False,
        tag="v1",
    )
    MlflowClient(tracking_uri=mlflow_server.uri).set_model_version_tag(
        registry_name, "1", "deploygate.hf_commit", pushed.sha
    )
    commits = len(hub_server.commits(own))
    again = _gate(
        tmp_path,
        capsys,
        monkeypatch,
        mlflow_server,
        registry_name,
        experiment_name,
        seed_run,
        own,
        "stranger",
        "1",
    )
    assert again.code == 0, again.err
    assert again.info()["registry"]["version"] == "1" and again.info()["hub"]["tag"] == "v1"
    assert len(hub_server.commits(own)) == commits  # nothing pushed again
