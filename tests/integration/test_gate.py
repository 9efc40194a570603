"""The gate end to end against a real `mlflow server`: decide, record, register, promote."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.gatekit import SEED_METRICS, metrics_scaled, run_gate, write_json

pytestmark = pytest.mark.slow


@pytest.fixture
def gate(tmp_path, capsys, mlflow_server, registry_name, experiment_name, monkeypatch):
    monkeypatch.setenv("GITHUB_SHA", "a" * 40)
    monkeypatch.delenv("GITHUB_EVENT_NAME", raising=False)

    def _run(**kw):
        return run_gate(
            tmp_path, capsys, uri=mlflow_server.uri, registry=registry_name, experiment=experiment_name, **kw
        )

    return _run


@pytest.fixture
def client(mlflow_server):
    return MlflowClient(tracking_uri=mlflow_server.uri)


def champion_version(client, name):
    return client.get_model_version_by_alias(name, "champion").version


def test_first_worse_better(gate, client, registry_name, experiment_name, monkeypatch, mlflow_server):
    first = gate(name="first")
    assert first.code == 0, first.err
    assert first.info()["decision"] == "deploy" and first.info()["registry"]["version"] == "1"
    assert champion_version(client, registry_name) == "1"
    mv = client.get_model_version(registry_name, "1")
    assert float(mv.tags["deploygate.weighted_score"]) == pytest.approx(first.info()["weighted_score"])
    assert float(mv.tags["deploygate.metric.bleu4"]) == pytest.approx(SEED_METRICS["bleu4"])
    assert mv.tags["deploygate.git_sha"] == "a" * 40

    monkeypatch.setenv("GITHUB_SHA", "b" * 40)
    worse = gate(name="worse", metrics=metrics_scaled(-0.01))
    assert worse.code == 0, worse.err
    info = worse.info()
    assert (info["decision"], info["deployed"], info["registry"]["version"]) == ("skip", False, None)
    assert info["baseline_score"] == pytest.approx(first.info()["weighted_score"])
    assert len(client.search_model_versions(f"name='{registry_name}'", max_results=10)) == 1

    monkeypatch.setenv("GITHUB_SHA", "c" * 40)
    better = gate(name="better", metrics=metrics_scaled(+0.01))
    assert better.code == 0, better.err
    assert better.info()["registry"]["url"] == f"{mlflow_server.uri}/#/models/{registry_name}/versions/2"
    assert (
        better.info()["registry"]["version"] == "2" and better.info()["registry"]["previous_version"] == "1"
    )
    assert champion_version(client, registry_name) == "2"
    comparison = better.comparison()
    assert comparison["baseline"]["version"] == "1"
    assert comparison["per_metric"]["bleu4"]["delta"] == pytest.approx(0.01)
    assert comparison["improvement_detail"]["absolute"] == pytest.approx(0.01)
    assert comparison["improvement"] == pytest.approx(0.01)  # the seed's key: a number

    # every run is recorded, deployed or not, with the files as artifacts
    exp = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([exp.experiment_id], max_results=10, order_by=["attributes.start_time ASC"])
    assert [r.data.tags["deploygate.decision"] for r in runs] == ["deploy", "skip", "deploy"]
    assert [r.data.metrics["deployed"] for r in runs] == [1.0, 0.0, 1.0]
    assert runs[1].data.metrics["improvement"] == pytest.approx(-0.01)
    assert runs[1].data.params["min_improvement_threshold"] == "0.001"
    arts = {a.path for a in client.list_artifacts(runs[1].info.run_id, "deployment")}
    assert arts == {
        "deployment/deployment_info.json",
        "deployment/model_comparison.json",
        "deployment/deployment_logs.txt",
    }
    assert "decision: skip" in (worse.output_dir / "deployment_logs.txt").read_text()


def test_below_threshold_and_tie(gate, client, registry_name, monkeypatch):
    assert gate(name="first").code == 0
    monkeypatch.setenv("GITHUB_SHA", "d" * 40)
    tie = gate(name="tie")
    assert tie.info()["rule"] == "not-better"
    small = gate(name="small", metrics=metrics_scaled(0.0005))
    assert small.info()["rule"] == "below-threshold" and not small.info()["deployed"]
    lower = gate(
        name="lower-threshold",
        metrics=metrics_scaled(0.0005),
        extra=["--min-improvement-threshold", "0.0001"],
    )
    assert lower.info()["deployed"]


def test_force_and_rerun_reuse_the_version(gate, client, registry_name):
    assert gate(name="first").code == 0
    forced = gate(name="forced", metrics=metrics_scaled(-0.05), extra=["--force-deploy"])
    assert forced.code == 0, forced.err
    info = forced.info()
    assert info["decision"] == "forced" and info["forced"] and info["deployed"]
    assert any("without force: skip" in n for n in info["notes"])
    again = gate(name="forced", metrics=metrics_scaled(-0.05), extra=["--force-deploy"])
    assert again.info()["registry"]["version"] == info["registry"]["version"]
    versions = client.search_model_versions(f"name='{registry_name}'", max_results=10)
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_dry_run_and_pull_request_never_register(gate, client, registry_name, monkeypatch):
    dry = gate(name="dry", extra=["--dry-run"])
    assert dry.code == 0 and dry.info()["decision"] == "deploy" and not dry.info()["deployed"]
    assert dry.info()["status"] == "verdict-only"
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    pr = gate(name="pr", extra=["--force-deploy"])
    assert pr.info()["decision"] == "forced" and not pr.info()["deployed"]
    assert client.search_model_versions(f"name='{registry_name}'", max_results=10) == []


def test_register_from_source_run_with_stage_promotion(gate, client, registry_name, tmp_path, monkeypatch):
    exp = client.create_experiment(f"training-{registry_name}")
    train = client.create_run(exp)
    peft_dir = tmp_path / "adapter" / "peft"
    write_json(peft_dir / "adapter_config.json", {"peft_type": "LORA", "r": 4})
    client.log_artifacts(train.info.run_id, str(tmp_path / "adapter"), "model")
    client.set_terminated(train.info.run_id)
    location = {
        "mlflow_run_id": train.info.run_id,
        "tracking_uri": "ignored",
        "dvc_stage": "train",
        "timestamp": "2026-01-01T00:00:00",
        "model_name": "tinyllama",
        "fine_tuned": True,
    }
    res = gate(name="src", location=location, extra=["--promotion", "both"])
    assert res.code == 0, res.err
    mv = client.get_model_version(registry_name, "1")
    assert mv.run_id == train.info.run_id and mv.source.endswith("/model")
    assert mv.current_stage == "Production"
    assert mv.tags["deploygate.source_run_id"] == train.info.run_id
    monkeypatch.setenv("GITHUB_SHA", "e" * 40)  # a new commit: a new candidate, though the same source run
    second = gate(
        name="src2", location=location, metrics=metrics_scaled(0.02), extra=["--promotion", "stage"]
    )
    assert second.code == 0, second.err
    stages = {
        v.version: v.current_stage
        for v in client.search_model_versions(f"name='{registry_name}'", max_results=10)
    }
    assert stages == {"1": "Archived", "2": "Production"}
    assert second.info()["registry"]["previous_version"] == "1"  # the stage holder was the baseline
    third = gate(name="src3", location=location, metrics=metrics_scaled(0.0), extra=["--promotion", "stage"])
    assert third.info()["decision"] == "skip"  # compared with the Production version, not "first model"


def test_best_ever_baseline(gate, client, registry_name):
    first = gate(name="a", metrics=metrics_scaled(0.03))
    assert first.code == 0 and first.info()["deployed"]  # a deployed run: counts
    assert (
        gate(name="c", metrics=metrics_scaled(0.05), extra=["--dry-run"]).code == 0
    )  # recorded, never deployed: not
    res = gate(name="b", metrics=metrics_scaled(0.01), extra=["--baseline", "best-ever"])
    assert res.info()["decision"] == "skip"  # below the best past deployed score
    assert res.comparison()["baseline"]["source"] == "best-ever"
    assert res.comparison()["baseline"]["weighted_score"] == first.info()["weighted_score"]


def test_unknown_source_run_is_bad_input(gate, client, registry_name, experiment_name):
    res = gate(name="ghost", location={"mlflow_run_id": "0123456789abcdef0123456789abcdef"})
    assert res.code == 2
    assert "mlflow_run_id" in res.err and "0123456789abcdef0123456789abcdef" in res.err
    assert client.get_experiment_by_name(experiment_name) is None  # nothing written


def test_unreachable_server_is_one_clear_line(tmp_path, capsys, registry_name, experiment_name):
    from tests.mlflow_fixtures import free_port

    res = run_gate(
        tmp_path,
        capsys,
        uri=f"http://127.0.0.1:{free_port()}",
        registry=registry_name,
        experiment=experiment_name,
    )
    assert res.code == 1
    lines = [line for line in res.err.splitlines() if "error" in line]
    assert len(lines) == 1 and "unreachable" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]
    assert "Traceback" not in res.err
    assert not res.output_dir.exists()


def test_guardrail_blocks_and_is_reported(gate, client, registry_name, monkeypatch):
    assert gate(name="first").code == 0
    monkeypatch.setenv("GITHUB_SHA", "9" * 40)
    better_but_less_precise = {
        **metrics_scaled(0.02),
        "rougeL_precision": SEED_METRICS["rougeL_precision"] - 0.05,
    }
    res = gate(
        name="guarded",
        metrics=better_but_less_precise,
        extra=["--guardrails", "rougeL_precision.max_drop=0.01"],
    )
    assert res.code == 0, res.err
    info = res.info()
    assert (info["decision"], info["rule"]) == ("skip", "guardrail") and "rougeL_precision" in info["reason"]
    rails = res.comparison()["checks"]["guardrails"]
    assert rails == [
        {
            "metric": "rougeL_precision",
            "kind": "max_drop",
            "limit": 0.01,
            "value": pytest.approx(0.05),
            "passed": False,
        }
    ]
    assert champion_version(client, registry_name) == "1"


def test_changed_weights_refuse_to_compare(gate, client, registry_name, experiment_name, monkeypatch):
    assert gate(name="first").code == 0
    monkeypatch.setenv("GITHUB_SHA", "8" * 40)
    res = gate(name="reweighted", metrics=metrics_scaled(0.02), extra=["--weights", "bleu4=1"])
    assert res.code == 2 and "scored differently" in res.err and "weights" in res.err
    exp = client.get_experiment_by_name(experiment_name)
    assert len(client.search_runs([exp.experiment_id], max_results=10)) == 1  # the refusal wrote nothing
    allowed = gate(
        name="reweighted2",
        metrics=metrics_scaled(0.02),
        extra=["--weights", "bleu4=1", "--allow-incomparable"],
    )
    assert allowed.code == 0
    assert allowed.comparison()["checks"]["comparability"]["status"] == "allowed"
    assert any("allow-incomparable" in w for w in allowed.info()["warnings"])
