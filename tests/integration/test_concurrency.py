"""N gate runs at once, several rounds, against one real MLflow server and one Hub repo.

Each run is a separate `deploygate` process with a random score. MLflow has no compare-and-swap
on aliases; the promotion protocol (deploygate/promotion.py) must still leave the champion on the
best candidate that was deployed, with every run recorded, no version lost or duplicated, the
promotion history consistent, and (in the Hub round) the Hub's main holding the champion's files.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from deploygate.registry import MlflowRegistry
from tests.gatekit import local_model, metrics_scaled, write_json
from tests.hub_server import HubServer
from tests.integration.test_faults import _seed_run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]

N = 8
ROUNDS = 3  # the last one pushes to the Hub
SEED = int(os.environ.get("DEPLOYGATE_CONCURRENCY_SEED", "20261126"))


def _spawn(root: Path, name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = root / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-c", "from deploygate.cli import entrypoint; entrypoint()", *argv], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=root)
    return proc, log


def test_concurrent_rounds_converge_on_the_best(tmp_path: Path, mlflow_server: Any, hub_server: HubServer) -> None:
    rng = random.Random(SEED)
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    registry, experiment = f"race-{uuid.uuid4().hex[:8]}", f"race-{uuid.uuid4().hex[:8]}"
    repo = hub_server.new_repo_id("race")
    seed = _seed_run(tmp_path / "seed", mlflow_server.uri)
    results: list[dict[str, Any]] = []
    started = time.monotonic()

    for rnd in range(ROUNDS):
        hub = rnd == ROUNDS - 1
        procs = []
        for i in range(N):
            name = f"r{rnd}-{i}"
            folder = tmp_path / name
            delta = round(rng.uniform(-0.03, 0.06) + 0.04 * rnd, 5)  # each round has winners to race
            metrics = write_json(folder / "metrics.json", metrics_scaled(delta))
            location = seed if hub else {"local_path": str(local_model(folder / "model", name))}
            loc = write_json(folder / "location.json", location)
            argv = ["--evaluation-results", str(metrics), "--model-artifact-path", str(loc),
                    "--output-dir", str(folder / "out"), "--mlflow-tracking-uri", mlflow_server.uri,
                    "--registry-name", registry, "--experiment-name", experiment,
                    *(["--hf-model-id", repo] if hub else ["--skip-hf-push"])]
            env = {"GITHUB_SHA": f"{rnd:02d}{i:02d}".ljust(40, "a"), "HF_TOKEN": hub_server.token,
                   "HF_ENDPOINT": hub_server.url}
            procs.append((name, folder, *_spawn(tmp_path, name, argv, env)))
        for name, folder, proc, log in procs:
            code = proc.wait(timeout=300)
            assert code == 0, f"{name} exited {code}:\n{log.read_text()[-3000:]}"
            info = json.loads((folder / "out" / "deployment_info.json").read_text())
            results.append({"name": name, "round": rnd, "hub": hub, "info": info, "log": log})
    elapsed = time.monotonic() - started

    def field(info: dict[str, Any], *path: str) -> Any:
        for key in path:
            info = info.get(key) if isinstance(info, dict) else None  # type: ignore[assignment]
        return info

    statuses = [r["info"]["status"] for r in results]
    assert set(statuses) <= {"deployed", "superseded", "skipped"}, statuses
    registered = {r["name"]: str(field(r["info"], "registry", "version")) for r in results
                  if r["info"]["status"] in ("deployed", "superseded")}
    scores = {r["name"]: float(r["info"]["weighted_score"]) for r in results}

    # every run is recorded: one finished MLflow run each
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == N * ROUNDS
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.info.run_id for r in runs}) == N * ROUNDS

    # no version lost or duplicated: one per deploying run, each from a different gate run
    versions = client.search_model_versions(f"name='{registry}'", max_results=1000)
    assert sorted(int(v.version) for v in versions) == list(range(1, len(registered) + 1))
    assert sorted(registered.values(), key=int) == sorted((v.version for v in versions), key=int)
    assert len({v.tags["deploygate.gate_run_id"] for v in versions}) == len(versions)
    assert all(v.status == "READY" for v in versions)

    # the champion is the best deployed candidate
    best = max(registered, key=lambda n: scores[n])
    champion = client.get_model_version_by_alias(registry, "champion")
    assert champion.version == registered[best], (
        f"champion v{champion.version} ({champion.tags['deploygate.weighted_score']}), best deployed "
        f"{best} v{registered[best]} ({scores[best]})")

    # a skipped run really was no better than a champion it saw (never better than the final best)
    for r in results:
        if r["info"]["status"] == "skipped":
            assert scores[r["name"]] <= scores[best]

    # the history tag: one entry per run that ended "deployed", no duplicates, the champion in it
    history = MlflowRegistry(mlflow_server.uri).history(registry)
    run_ids = [e["run_id"] for e in history]
    assert len(run_ids) == len(set(run_ids))
    deployed_runs = {r["info"]["mlflow"]["run_id"] for r in results if r["info"]["status"] == "deployed"}
    deployed_versions = {registered[r["name"]] for r in results if r["info"]["status"] == "deployed"}
    assert {str(e["version"]) for e in history} == deployed_versions
    assert set(run_ids) == deployed_runs
    assert champion.version in {str(e["version"]) for e in history}

    # the Hub round: main holds the champion's files, one tag per pushed version
    assert repo in hub_server.repos, "no run of the Hub round deployed"
    with hub_server._lock:
        hub_repo = hub_server.repos[repo]
        tags = dict(hub_repo.tags)
        main_files = {p: b.oid for p, b in hub_repo.resolve("main").files.items()}
        champ_files = {p: b.oid for p, b in hub_repo.resolve(f"v{champion.version}").files.items()} \
            if f"v{champion.version}" in tags else None
    pushed = {registered[r["name"]] for r in results if r["hub"] and r["name"] in registered}
    assert {t.removeprefix("v") for t in tags} == pushed
    if champ_files is not None:
        assert main_files == champ_files, "the Hub's main does not hold the champion's files"

    summary = (f"concurrency summary: {N} runs x {ROUNDS} rounds ({N * ROUNDS} runs, 1 round with Hub pushes) in "
               f"{elapsed:.0f} s: {statuses.count('deployed')} deployed, {statuses.count('superseded')} superseded, "
               f"{statuses.count('skipped')} skipped; champion v{champion.version} = best of {len(registered)} "
               f"registered; no version lost or duplicated")
    print("\n" + summary)
    if os.environ.get("DEPLOYGATE_CONCURRENCY_SUMMARY"):
        Path(os.environ["DEPLOYGATE_CONCURRENCY_SUMMARY"]).write_text(summary + "\n")
