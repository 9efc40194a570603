"""Finding 2 of issue 9: a registry the seed's deployment script left (a version in the Production
stage with its own tags, no alias) is adopted, never read as "first model"; where the production
model's score came from is said in the reason; `deploygate adopt` records a score nobody recorded."""

from __future__ import annotations

import warnings

import pytest
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.gatekit import run_gate
from tests.seedworld import SEED_WEIGHTS, eval_with_score, seed_era_version

pytestmark = pytest.mark.slow


@pytest.fixture
def client(mlflow_server):
    return MlflowClient(tracking_uri=mlflow_server.uri)


@pytest.fixture
def gate(tmp_path, capsys, mlflow_server, registry_name, experiment_name, monkeypatch):
    monkeypatch.delenv("GITHUB_EVENT_NAME", raising=False)

    def _run(name, score, sha, extra=()):
        monkeypatch.setenv("GITHUB_SHA", sha * 40)
        return run_gate(
            tmp_path,
            capsys,
            uri=mlflow_server.uri,
            registry=registry_name,
            experiment=experiment_name,
            metrics=eval_with_score(score),
            name=name,
            extra=list(extra),
        )

    return _run


def training_run(client, metrics=None):
    run = client.create_run(
        client.create_experiment(f"train-{id(metrics)}-{__import__('uuid').uuid4().hex[:6]}")
    )
    for key, value in (metrics or {"train_loss": 1.2, "eval_loss": 1.3}).items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def stages(client, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return {
            v.version: v.current_stage for v in client.search_model_versions(f"name='{name}'", max_results=20)
        }


def test_a_worse_candidate_never_replaces_the_seed_production_model(gate, client, registry_name, capsys):
    seed_era_version(client, registry_name, training_run(client), 0.49)
    worse = gate("worse", 0.29, "1")
    assert worse.code == 0, worse.err
    info = worse.info()
    assert (info["decision"], info["rule"], info["deployed"]) == ("skip", "not-better", False)
    assert info["baseline_score"] == pytest.approx(0.49)
    assert (
        "Production stage and no 'champion' alias" in info["reason"]
        and "E-commerce-Chatbot deployment script" in info["reason"]
    )
    assert worse.comparison()["historical_best_score"] == pytest.approx(0.49)
    assert stages(client, registry_name) == {"1": "Production"}
    assert not client.get_registered_model(registry_name).aliases

    better = gate("better", 0.52, "2")
    assert better.code == 0, better.err
    assert (
        better.info()["registry"]["version"] == "2" and better.info()["registry"]["previous_version"] == "1"
    )
    assert better.info()["registry"]["promotion"] == "both"  # the first deploy moves the stage too
    assert client.get_model_version_by_alias(registry_name, "champion").version == "2"
    assert stages(client, registry_name) == {"1": "Archived", "2": "Production"}
    # the adopted model is in the promotion history: a rollback goes back to it
    assert (
        main(
            [
                "rollback",
                "--registry-name",
                registry_name,
                "--mlflow-tracking-uri",
                client.tracking_uri,
                "--skip-hf-push",
                "--output-dir",
                str(better.output_dir.parent / "rb"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert client.get_model_version_by_alias(registry_name, "champion").version == "1"


@pytest.mark.parametrize("case", ["deploygate-tag", "run-metric", "recomputed", "seed-tag"])
def test_the_production_score_lookup_order(case, gate, client, registry_name):
    """deploygate's tag, else the run's weighted_score, else recomputed from its metrics, else the seed's tag."""
    bleu = eval_with_score(0.40)
    run_metrics = {
        "deploygate-tag": {"weighted_score": 0.45},
        "run-metric": {"weighted_score": 0.45, **bleu},
        "recomputed": bleu,
        "seed-tag": {"train_loss": 1.0},
    }[case]
    version = seed_era_version(client, registry_name, training_run(client, run_metrics), 0.30)
    if case == "deploygate-tag":
        client.set_model_version_tag(registry_name, version, "deploygate.weighted_score", "0.47")
    expected, said = {
        "deploygate-tag": (0.47, "deploygate.weighted_score tag"),
        "run-metric": (0.45, "weighted_score metric"),
        "recomputed": (sum(bleu[k] * w for k, w in SEED_WEIGHTS.items()), "recomputed from its run"),
        "seed-tag": (0.30, "E-commerce-Chatbot deployment script"),
    }[case]
    res = gate(case, 0.20, "3")
    assert res.code == 0, res.err
    assert res.info()["baseline_score"] == pytest.approx(expected)
    assert said in res.info()["reason"] and res.info()["decision"] == "skip"


def test_an_unscored_production_model_is_refused_then_adopted(
    gate, client, registry_name, capsys, experiment_name
):
    seed_era_version(
        client, registry_name, training_run(client), 0.0, tags={"deployment_timestamp": "2025-06-01"}
    )
    refused = gate("refused", 0.29, "4")
    assert refused.code == 2
    line = [x for x in refused.err.splitlines() if "error" in x]
    assert (
        len(line) == 1
        and f"deploygate adopt --registry-name {registry_name} --version 1 --score S" in line[0]
    )
    assert "--baseline best-ever" in line[0] and client.get_experiment_by_name(experiment_name) is None

    argv = ["adopt", "--registry-name", registry_name, "--mlflow-tracking-uri", client.tracking_uri]
    assert main([*argv, "--version", "1", "--score", "1.7"]) == 2
    assert "not a weighted score from 0 to 1" in capsys.readouterr().err
    assert main([*argv, "--version", "9", "--score", "0.49"]) == 2
    assert "--version: version '9'" in capsys.readouterr().err
    assert main([*argv, "--version", "1", "--score", "0.49", "--reason", "seed production model"]) == 0
    assert "adopted" in capsys.readouterr().out
    mv = client.get_model_version_by_alias(registry_name, "champion")
    assert mv.version == "1" and float(mv.tags["deploygate.weighted_score"]) == 0.49
    after = gate("after", 0.29, "5")
    assert after.code == 0 and after.info()["rule"] == "not-better"
    assert after.info()["baseline_score"] == pytest.approx(0.49)


def test_best_ever_with_no_past_run_still_beats_production(gate, client, registry_name):
    seed_era_version(client, registry_name, training_run(client), 0.49)
    res = gate("best-ever", 0.29, "6", extra=["--baseline", "best-ever"])
    assert res.code == 0, res.err
    assert res.info()["rule"] == "not-better" and "no past gate run" in res.info()["reason"]
