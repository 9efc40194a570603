"""N gate runs at once, several rounds, against one real MLflow server and one Hub repo.

Each run is a separate `deploygate` process with a random score. MLflow has no compare-and-swap
on aliases; the promotion protocol (deploygate/core/promotion.py) must still leave the champion on the
best candidate that was deployed, with every run recorded, no version lost or duplicated, the
promotion history consistent, and (in the Hub round) the Hub's main holding the champion's files.
The rounds run against the sqlite- and the PostgreSQL-backed server; first promotions racing (no
registered model, no alias yet: concurrent inserts) on PostgreSQL, whose wording of a collided
insert differs (sqlite's is raced in the rounds' first round). Two staged races end it, on sqlite
only (they are decided by the order of requests, not by the database): a rollback while a deploy
is in flight, and two deploys where the worse candidate's Hub push lands last; after each the
alias and the Hub's main agree.
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

from deploygate.adapters.mlflow_registry import MlflowRegistry
from tests.gatekit import environ, local_model, metrics_scaled, write_json
from tests.hub_server import HubServer
from tests.integration.test_faults import _seed_run
from tests.pg_fixtures import SQLITE_ONLY

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]

N = 6
ROUNDS = 2  # the first races first promotions (sqlite), the second pushes to the Hub
SEED = int(os.environ.get("DEPLOYGATE_CONCURRENCY_SEED", "20261126"))


def _spawn(
    root: Path, name: str, argv: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    log = root / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from deploygate.shells.cli import entrypoint; entrypoint()", *argv],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        cwd=root,
    )
    return proc, log


def test_concurrent_rounds_converge_on_the_best(
    tmp_path: Path, mlflow_backend: Any, hub_server: HubServer
) -> None:
    mlflow_server = mlflow_backend
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
            argv = [
                "--evaluation-results",
                str(metrics),
                "--model-artifact-path",
                str(loc),
                "--output-dir",
                str(folder / "out"),
                "--mlflow-tracking-uri",
                mlflow_server.uri,
                "--registry-name",
                registry,
                "--experiment-name",
                experiment,
                *(["--hf-model-id", repo] if hub else ["--skip-hf-push"]),
            ]
            env = {
                "GITHUB_SHA": f"{rnd:02d}{i:02d}".ljust(40, "a"),
                "HF_TOKEN": hub_server.token,
                "HF_ENDPOINT": hub_server.url,
            }
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
    registered = {
        r["name"]: str(field(r["info"], "registry", "version"))
        for r in results
        if r["info"]["status"] in ("deployed", "superseded")
    }
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
        f"{best} v{registered[best]} ({scores[best]})"
    )

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
        champ_files = (
            {p: b.oid for p, b in hub_repo.resolve(f"v{champion.version}").files.items()}
            if f"v{champion.version}" in tags
            else None
        )
    pushed = {registered[r["name"]] for r in results if r["hub"] and r["name"] in registered}
    assert {t.removeprefix("v") for t in tags} == pushed
    if champ_files is not None:
        assert main_files == champ_files, "the Hub's main does not hold the champion's files"

    summary = (
        f"concurrency summary ({mlflow_server.backend}): {N} runs x {ROUNDS} rounds ({N * ROUNDS} runs, 1 round with Hub pushes) in "
        f"{elapsed:.0f} s: {statuses.count('deployed')} deployed, {statuses.count('superseded')} superseded, "
        f"{statuses.count('skipped')} skipped; champion v{champion.version} = best of {len(registered)} "
        f"registered; no version lost or duplicated"
    )
    _report(summary)


def _report(summary: str) -> None:
    print("\n" + summary)
    if os.environ.get("DEPLOYGATE_CONCURRENCY_SUMMARY"):
        with Path(os.environ["DEPLOYGATE_CONCURRENCY_SUMMARY"]).open("a") as fh:
            fh.write(summary + "\n")


FIRST_ROUNDS = 2


def test_first_promotions_race_on_postgresql(tmp_path: Path, mlflow_pg_server: Any) -> None:
    """Finding 5: N first promotions at once (no registered model, no alias yet) collide in the
    database; PostgreSQL words that `UniqueViolation`, which was not recognised, so a run failed
    (once it held the best score, and the champion ended on a worse one). A proxy in front of the
    server holds each run's first alias request until all N have sent theirs, then lets them go at
    once: every round is a real collision on the alias insert."""
    import threading

    from tests.faultproxy import FaultProxy

    rng = random.Random(SEED + 1)
    client = MlflowClient(tracking_uri=mlflow_pg_server.uri)
    counts = {"deployed": 0, "superseded": 0}
    started = time.monotonic()
    proxy = FaultProxy(mlflow_pg_server.uri).start()
    try:
        for rnd in range(FIRST_ROUNDS):
            registry, experiment = f"first-{uuid.uuid4().hex[:8]}", f"first-{uuid.uuid4().hex[:8]}"
            barrier = threading.Barrier(N, timeout=240)
            proxy.clear()
            proxy.on("POST", r"/registered-models/alias$", before=barrier.wait, times=N)
            procs = []
            for i in range(N):
                name = f"f{rnd}-{i}"
                folder = tmp_path / name
                metrics = write_json(
                    folder / "metrics.json", metrics_scaled(round(rng.uniform(-0.03, 0.03), 5))
                )
                loc = write_json(
                    folder / "location.json", {"local_path": str(local_model(folder / "model", name))}
                )
                argv = [
                    "--evaluation-results",
                    str(metrics),
                    "--model-artifact-path",
                    str(loc),
                    "--output-dir",
                    str(folder / "out"),
                    "--mlflow-tracking-uri",
                    proxy.url,
                    "--registry-name",
                    registry,
                    "--experiment-name",
                    experiment,
                    "--skip-hf-push",
                ]
                env = {"GITHUB_SHA": f"{rnd:02d}{i:02d}".ljust(40, "b"), "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
                procs.append((name, folder, *_spawn(tmp_path, name, argv, env)))
            infos = {}
            for name, folder, proc, log in procs:
                code = proc.wait(timeout=400)
                assert code == 0, f"{name} exited {code}:\n{log.read_text()[-3000:]}"
                infos[name] = json.loads((folder / "out" / "deployment_info.json").read_text())
            assert not barrier.broken, "the alias requests did not all arrive"
            statuses = [i["status"] for i in infos.values()]
            assert set(statuses) <= {"deployed", "superseded"}, statuses  # all decided before any promotion
            for status in statuses:
                counts[status] += 1
            best = max(infos, key=lambda n: float(infos[n]["weighted_score"]))
            champion = client.get_model_version_by_alias(registry, "champion")
            assert champion.version == str(infos[best]["registry"]["version"])
            versions = client.search_model_versions(f"name='{registry}'", max_results=100)
            assert sorted(int(v.version) for v in versions) == list(range(1, N + 1))
            deployed_runs = {i["mlflow"]["run_id"] for i in infos.values() if i["status"] == "deployed"}
            assert {
                e["run_id"] for e in MlflowRegistry(mlflow_pg_server.uri).history(registry)
            } == deployed_runs
    finally:
        proxy.stop()
    _report(
        f"concurrency summary (postgresql): {N} first promotions released at once x {FIRST_ROUNDS} rounds in "
        f"{time.monotonic() - started:.0f} s: {counts['deployed']} deployed, {counts['superseded']} superseded; "
        f"champion = best every round; {N} versions each, none lost or duplicated"
    )


def _hub_main_is_champion(hub_server: HubServer, repo: str, champion: str) -> None:
    with hub_server._lock:
        hub_repo = hub_server.repos[repo]
        main = {p: b.oid for p, b in hub_repo.resolve("main").files.items()}
        tagged = hub_repo.resolve(f"v{champion}")
        assert tagged is not None, f"no tag v{champion}"
        champ = {p: b.oid for p, b in tagged.files.items()}
    assert main == champ, f"the Hub's main does not hold the files of champion v{champion}"


class _Staged:
    """Runs staged against one MLflow server and one Hub repo: in-process gates, and a gate in its
    own process (what a hook in a fault proxy starts while it holds another run's request)."""

    def __init__(self, root: Path, uri: str, hub: HubServer) -> None:
        self.root, self.uri, self.hub = root, uri, hub
        self.registry, self.experiment = f"staged-{uuid.uuid4().hex[:8]}", f"staged-{uuid.uuid4().hex[:8]}"
        self.repo = hub.new_repo_id("staged")
        self.base = root / "base"

    def location(self, name: str, seed: int) -> Path:
        return write_json(
            self.root / name / "location.json",
            _seed_run(self.root / f"src-{name}", self.uri, seed=seed, base=self.base),
        )

    def argv(self, name: str, delta: float, seed: int, *, uri: str | None = None) -> list[str]:
        metrics = write_json(self.root / name / "metrics.json", metrics_scaled(delta))
        return [
            "--evaluation-results",
            str(metrics),
            "--model-artifact-path",
            str(self.location(name, seed)),
            "--output-dir",
            str(self.root / name / "out"),
            "--mlflow-tracking-uri",
            uri or self.uri,
            "--registry-name",
            self.registry,
            "--experiment-name",
            self.experiment,
            "--hf-model-id",
            self.repo,
        ]

    def env(self, sha: str, endpoint: str | None = None) -> dict[str, str]:
        return {
            "GITHUB_SHA": (sha * 40)[:40],
            "HF_TOKEN": self.hub.token,
            "HF_ENDPOINT": endpoint or self.hub.url,
        }

    def in_process(self, argv: list[str], env: dict[str, str]) -> int:
        from deploygate.shells.cli import main

        with environ(env):
            return main(argv)

    def in_own_process(self, name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
        proc, log = _spawn(self.root, name, argv, env)
        code = proc.wait(timeout=300)
        assert code == 0, f"{name} exited {code}:\n{log.read_text()[-3000:]}"
        return dict(json.loads((self.root / name / "out" / "deployment_info.json").read_text()))

    def info(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.root / name / "out" / "deployment_info.json").read_text()))

    def champion(self) -> str:
        return str(
            MlflowClient(tracking_uri=self.uri).get_model_version_by_alias(self.registry, "champion").version
        )


# Where the deploy of v3 is run to its end while the proxy holds the rollback's request: its re-read
# of the holder just before the move (so it sees v3 and replaces it), or its first write, after that
# re-read (the interleaving: it replaces v2 but the Hub's main had followed v3).
ROLLBACK_HOLDS = [
    ("before-the-re-read", "GET", r"/registered-models/alias$", 1, "3"),
    ("after-the-re-read", "POST", r"/runs/create$", 0, "2"),
]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("hold", "method", "path", "after", "replaced"), ROLLBACK_HOLDS, ids=[h[0] for h in ROLLBACK_HOLDS]
)
def test_a_rollback_during_an_in_flight_deploy_leaves_alias_and_hub_agreeing(
    tmp_path: Path,
    mlflow_backend: Any,
    hub_server: HubServer,
    hold: str,
    method: str,
    path: str,
    after: int,
    replaced: str,
) -> None:
    """Finding 6: the rollback read the champion (v2) and restored v1 on the Hub; meanwhile a deploy
    of v3 pushed, moved the alias and made main follow it; then the rollback moved the alias to v1:
    alias on v1, Hub main on v3, both exit 0. Staged exactly so: the deploy runs to its end while a
    proxy holds one of the rollback's MLflow requests after its Hub restore."""
    from tests.faultproxy import FaultProxy

    w = _Staged(tmp_path, mlflow_backend.uri, hub_server)
    assert w.in_process(w.argv("v1", 0.0, 1), w.env("1")) == 0
    assert w.in_process(w.argv("v2", 0.01, 2), w.env("2")) == 0
    deploy_argv = w.argv("v3", 0.02, 3)  # prepared before the hook: its seed run goes to MLflow directly
    deployed: dict[str, Any] = {}
    proxy = FaultProxy(mlflow_backend.uri).start()
    try:
        proxy.on(
            method,
            path,
            before=lambda: deployed.update(w.in_own_process("v3", deploy_argv, w.env("3"))),
            after=after,
            times=1,
        )
        code = w.in_process(
            [
                "rollback",
                "--registry-name",
                w.registry,
                "--experiment-name",
                w.experiment,
                "--mlflow-tracking-uri",
                proxy.url,
                "--hf-model-id",
                w.repo,
                "--output-dir",
                str(tmp_path / "rb"),
                "--reason",
                "bad answers",
            ],
            {**w.env("4"), "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"},
        )  # held while v3 deploys
    finally:
        proxy.stop()
    assert code == 0
    assert deployed.get("status") == "deployed", deployed  # v3 was champion for a moment
    champion = w.champion()
    assert champion == "1"  # the rollback, a human's choice, has the last word
    _hub_main_is_champion(hub_server, w.repo, champion)
    rolled = json.loads((tmp_path / "rb" / "rollback_info.json").read_text())
    assert (rolled["from_version"], rolled["to_version"]) == (replaced, "1")
    _report(
        f"concurrency summary ({mlflow_backend.backend}): a rollback during an in-flight deploy ({hold}): "
        f"champion v{champion}, the Hub's main holds its files"
    )


@SQLITE_ONLY
def test_the_worse_candidates_push_landing_last_does_not_win_the_hub(
    tmp_path: Path, mlflow_backend: Any, hub_server: HubServer
) -> None:
    """Two deploys that both beat the champion: the worse one's Hub commit is held by a proxy until the
    better one has pushed, been promoted and finished; then it lands on main. The worse run must yield
    the alias and put main back to the champion's files."""
    from tests.faultproxy import FaultProxy

    w = _Staged(tmp_path, mlflow_backend.uri, hub_server)
    assert w.in_process(w.argv("v1", 0.0, 1), w.env("1")) == 0
    better_argv = w.argv("better", 0.03, 2)
    better: dict[str, Any] = {}
    hub_proxy = FaultProxy(hub_server.url).start()
    try:
        hub_proxy.on(
            "POST",
            r"^/api/models/.+/commit/main$",
            before=lambda: better.update(w.in_own_process("better", better_argv, w.env("2"))),
            times=1,
        )
        code = w.in_process(w.argv("worse", 0.01, 3), w.env("3", hub_proxy.url))
    finally:
        hub_proxy.stop()
    assert code == 0
    assert better["status"] == "deployed", better
    worse = w.info("worse")
    assert worse["status"] == "superseded", worse
    assert w.champion() == str(better["registry"]["version"])
    _hub_main_is_champion(hub_server, w.repo, w.champion())
    _report(
        f"concurrency summary ({mlflow_backend.backend}): the worse candidate's push landing last: champion "
        f"v{w.champion()} (the better one), the Hub's main holds its files"
    )
