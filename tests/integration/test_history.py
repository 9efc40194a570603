"""The registry's records over time, on the sqlite- and the PostgreSQL-backed MLflow server: the
promotion history, what rollback reads from it, the limits SQL backends enforce on what is
written, registered model names that need quoting in MLflow's filters, and the runs `best-ever`
counts.

sqlite checks no length, so a history that outgrew MLflow's 5,000-character tag column only failed
on PostgreSQL/MySQL, after the alias had moved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from deploygate.adapters.mlflow_registry import MlflowRegistry
from deploygate.shells.cli import main
from tests.gatekit import GateRun, local_model, metrics_scaled, run_gate

pytestmark = pytest.mark.slow


class Gate:
    def __init__(
        self,
        tmp: Path,
        capsys: pytest.CaptureFixture[str],
        uri: str,
        registry: str,
        experiment: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.tmp, self.capsys, self.uri, self.registry, self.experiment = (
            tmp,
            capsys,
            uri,
            registry,
            experiment,
        )
        self.monkeypatch = monkeypatch

    def __call__(
        self,
        name: str,
        sha: str,
        delta: float,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> GateRun:
        self.monkeypatch.setenv("GITHUB_SHA", (sha * 40)[:40])
        for key, value in (env or {}).items():
            self.monkeypatch.setenv(key, value)
        try:
            return run_gate(
                self.tmp,
                self.capsys,
                uri=self.uri,
                registry=self.registry,
                experiment=self.experiment,
                name=name,
                metrics=metrics_scaled(delta),
                extra=extra,
            )
        finally:
            for key in env or {}:
                self.monkeypatch.delenv(key)

    def rollback(self, *extra: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(
            [
                "rollback",
                "--registry-name",
                self.registry,
                "--experiment-name",
                self.experiment,
                "--mlflow-tracking-uri",
                self.uri,
                "--skip-hf-push",
                "--output-dir",
                str(self.tmp / f"rb-{len(list(self.tmp.glob('rb-*')))}"),
                *extra,
            ]
        )
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def gate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mlflow_backend: Any,
    registry_name: str,
    experiment_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Gate:
    return Gate(tmp_path, capsys, mlflow_backend.uri, registry_name, experiment_name, monkeypatch)


def _champion(gate: Gate) -> str:
    return str(
        MlflowClient(tracking_uri=gate.uri).get_model_version_by_alias(gate.registry, "champion").version
    )


def test_a_long_history_never_blocks_a_deploy_and_rollback_reads_all_of_it(gate: Gate) -> None:
    """Finding 3: 30 promotions made the one JSON history tag longer than PostgreSQL's 5,000-character
    column; every later deploy failed after moving the alias and rollback read a frozen history."""
    assert gate("v1", "1", 0.0).code == 0
    assert gate("v2", "2", 0.01).code == 0
    registry = MlflowRegistry(gate.uri)
    for i in range(30):  # re-promotions, as forced deploys and rollbacks between v1 and v2 leave them
        version = "1" if i % 2 == 0 else "2"
        registry.append_history(
            gate.registry,
            {
                "version": version,
                "score": 0.25,
                "at": f"2026-01-01T00:00:{i:02d}+00:00",
                "run_id": f"{i:032x}",
                "git_sha": "f" * 40,
                "forced": True,
                "hf_commit": "e" * 40,
            },
        )
    third = gate("v3", "3", 0.02)
    assert third.code == 0, third.err
    info = third.info()
    assert (info["status"], info["registry"]["version"]) == ("deployed", "3")
    history = registry.history(gate.registry)
    assert len(history) == 33 and history[-1]["version"] == "3"
    # every tag deploygate wrote on the registered model fits MLflow's column
    tags = MlflowClient(tracking_uri=gate.uri).get_registered_model(gate.registry).tags
    assert max(len(v) for v in tags.values()) <= 5000

    code, _, err = gate.rollback("--reason", "v3 answers badly")
    assert code == 0, err
    assert _champion(gate) == "2"
    code, _, err = gate.rollback()
    assert code == 0, err
    assert _champion(gate) == "1"  # the stack: the one before v2, never forward again


def test_history_written_by_the_previous_release_is_still_read(gate: Gate) -> None:
    """Registries promoted by the current release keep their history in one `deploygate.history` tag."""
    assert gate("v1", "1", 0.0).code == 0
    assert gate("v2", "2", 0.01).code == 0
    client = MlflowClient(tracking_uri=gate.uri)
    for key in [
        k for k in client.get_registered_model(gate.registry).tags if k.startswith("deploygate.history")
    ]:
        client.delete_registered_model_tag(gate.registry, key)
    legacy = [
        {"version": "1", "score": 0.23, "at": "2026-01-01T00:00:00+00:00", "run_id": "a" * 32},
        {"version": "2", "score": 0.24, "at": "2026-01-02T00:00:00+00:00", "run_id": "b" * 32},
    ]
    client.set_registered_model_tag(gate.registry, "deploygate.history", json.dumps(legacy))
    assert gate("v3", "3", 0.02).code == 0
    assert [e["version"] for e in MlflowRegistry(gate.uri).history(gate.registry)] == ["1", "2", "3"]
    code, _, err = gate.rollback()
    assert code == 0, err
    assert _champion(gate) == "2"


def test_an_overlong_rollback_reason_is_refused_before_anything_moves(gate: Gate) -> None:
    """Finding 3: a 5,000-character --reason failed after the alias had moved (PostgreSQL), or was
    stored whole where it fit (sqlite)."""
    assert gate("v1", "1", 0.0).code == 0
    assert gate("v2", "2", 0.01).code == 0
    client = MlflowClient(tracking_uri=gate.uri)
    runs_before = len(
        client.search_runs([client.get_experiment_by_name(gate.experiment).experiment_id], max_results=100)
    )
    code, _, err = gate.rollback("--reason", "x" * 5000)
    assert code == 2, err
    assert "reason" in err and "5000" in err.replace(",", "")
    assert len(err.strip().splitlines()) == 1 and len(err) < 400
    assert _champion(gate) == "2"
    assert (
        len(
            client.search_runs(
                [client.get_experiment_by_name(gate.experiment).experiment_id], max_results=100
            )
        )
        == runs_before
    )


NAMES = [
    "it's a model",
    'say "hi"',
    "both ' and \"",
    "two  spaces ",
    "ünïcødé 模型",
    "back\\slash\\",
    "100%_match",
]


@pytest.mark.parametrize("name", NAMES, ids=[f"name{i}" for i in range(len(NAMES))])
def test_registry_names_that_need_quoting_find_their_version(
    mlflow_backend: Any, tmp_path: Path, name: str
) -> None:
    """Finding 10: the filter escaping was wrong, so a re-run never found its version and registered
    a duplicate. Each name is registered beside a decoy that a wrong filter would match."""
    registry = MlflowRegistry(mlflow_backend.uri)
    client = registry.client
    exp = client.create_experiment(f"names-{tmp_path.name}")
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(local_model(tmp_path / "m")), "model")
    source = f"{run.info.artifact_uri}/model"
    unique = f"{name} {tmp_path.name[-6:]}"
    decoy = unique.replace("'", "").replace('"', "").replace("\\", "") + " decoy"
    key = "k" * 32
    registry.register(
        decoy,
        source_uri=source,
        run_id=run.info.run_id,
        tags={"deploygate.candidate_key": key},
        description="",
    )
    assert registry.find_version(unique, key) is None
    version = registry.register(
        unique,
        source_uri=source,
        run_id=run.info.run_id,
        tags={"deploygate.candidate_key": key},
        description="",
    )
    assert registry.find_version(unique, key) == version
    assert registry.find_version(unique, "0" * 32) is None


def test_a_rerun_under_a_quoted_name_reuses_its_version(gate: Gate) -> None:
    gate.registry = f"it's {gate.registry}"
    first = gate("same", "1", 0.0)
    assert first.code == 0, first.err
    again = gate("same", "1", 0.0, extra=["--force-deploy"])
    assert again.code == 0, again.err
    versions = MlflowClient(tracking_uri=gate.uri).search_model_versions(
        "tags.`deploygate.candidate_key` != ''", max_results=1000
    )
    assert sorted(v.version for v in versions if v.name == gate.registry) == ["1"]


@pytest.mark.parametrize("mlflow_backend", ["sqlite"], indirect=True)
def test_best_ever_counts_only_runs_that_deployed(gate: Gate) -> None:
    """Finding 8: an inflated pull-request verdict (or a dry run) became the best-ever score and blocked
    every real candidate."""
    best_ever = ["--baseline", "best-ever"]
    first = gate("v1", "1", 0.0, best_ever)
    assert first.code == 0
    pr = gate("pr", "2", 0.2, best_ever, env={"GITHUB_EVENT_NAME": "pull_request"})
    assert pr.code == 0 and pr.info()["status"] == "verdict-only"
    dry = gate("dry", "3", 0.3, [*best_ever, "--dry-run"])
    assert dry.code == 0 and dry.info()["status"] == "verdict-only"
    real = gate("real", "4", 0.02, best_ever)
    assert real.code == 0, real.err
    info = real.info()
    assert info["status"] == "deployed", info["reason"]
    assert info["baseline_score"] == pytest.approx(first.info()["weighted_score"], abs=1e-12)
