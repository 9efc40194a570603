"""Faults at every step of a deploying run, against the real MLflow server (behind tests/faultproxy.py)
and the local Hub server (its own fault hooks, or behind a second proxy).

One registry + Hub repo per module, with a first champion deployed. Each test is one fault scenario
that tries to deploy the next candidate (one version up, a better score): after the fault it checks
the invariant (the champion is a READY version whose files are the ones on the Hub's `main`), that
the gate run was recorded FAILED when MLflow could be reached, then re-runs the same command and
checks the deployment completed with no duplicate version and no duplicate Hub upload commit.
Transient faults must be survived within the run (bounded retries); permanent ones must fail fast
(no retry) with a message that says what to fix. The summary line at the end counts them.

The scenarios whose outcome depends on the database behind MLflow (what was committed when the
fault hit) run against the sqlite- and the PostgreSQL-backed server; those decided by the proxy or
the Hub alone (refused credentials, Hub faults) run on sqlite only (`SQLITE_ONLY`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.faultproxy import FaultProxy
from tests.gatekit import environ, metrics_scaled, write_json
from tests.hub_server import HubServer, iter_repo_files
from tests.modelfactory import make_lora_adapter, make_tiny_llama, save_tiny_tokenizer
from tests.pg_fixtures import SQLITE_ONLY

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]

ALIAS_POST = r"/registered-models/alias$"
VERSION_CREATE = r"/model-versions/create$"
HUB_COMMIT = r"^/api/models/.+/commit/main$"
HUB_PREUPLOAD = r"^/api/models/.+/preupload/"
LFS_PUT = r"^/__lfs/upload/"

TALLIES: dict[str, dict[str, list[str]]] = {}  # per backend


def _tally_of(backend: str) -> dict[str, list[str]]:
    return TALLIES.setdefault(backend, {"injected": [], "survived": [], "failed-safe": [], "scenarios": []})


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@dataclass
class World:
    """One registry, one experiment, one Hub repo, one seed training run; MLflow behind `proxy`,
    the Hub behind `hub_proxy` (both start healthy)."""

    root: Path
    mlflow_uri: str
    proxy: FaultProxy
    hub: HubServer
    hub_proxy: FaultProxy
    registry: str
    experiment: str
    repo: str
    location: dict[str, Any]
    client: MlflowClient
    backend: str = "sqlite"
    runs: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    locations: dict[str, dict[str, Any]] = field(default_factory=dict)  # per candidate: its own adapter

    # --- driving the gate ----------------------------------------------------------------------

    def argv(self, name: str, delta: float, extra: tuple[str, ...] = ()) -> list[str]:
        folder = self.root / name
        metrics = write_json(folder / "metrics.json", metrics_scaled(delta))
        location = write_json(folder / "location.json", self.locations.get(name, self.location))
        return [
            "--evaluation-results",
            str(metrics),
            "--model-artifact-path",
            str(location),
            "--output-dir",
            str(folder / "out"),
            "--mlflow-tracking-uri",
            self.proxy.url,
            "--registry-name",
            self.registry,
            "--experiment-name",
            self.experiment,
            "--hf-model-id",
            self.repo,
            *extra,
        ]

    def env(self, sha: str) -> dict[str, str]:
        return {"GITHUB_SHA": sha, "HF_TOKEN": self.hub.token, "HF_ENDPOINT": self.hub_proxy.url}

    def gate(
        self,
        name: str,
        sha: str,
        delta: float,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        capsys: pytest.CaptureFixture[str] | None = None,
    ) -> Outcome:
        """Run the CLI in this process (fast: no imports to pay)."""
        self.runs += 1
        with environ({**self.env(sha), **(env or {})}):
            if capsys is not None:
                capsys.readouterr()
            code = main(self.argv(name, delta, extra))
            out, err = capsys.readouterr() if capsys is not None else ("", "")
        return Outcome(code, out, err)

    def spawn(self, name: str, sha: str, delta: float) -> subprocess.Popen[bytes]:
        """Run the CLI as a separate process (to be killed)."""
        self.runs += 1
        env = {**os.environ, **self.env(sha)}
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from deploygate.shells.cli import entrypoint; entrypoint()",
                *self.argv(name, delta),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
        )

    # --- reading the state directly (not through the proxies) ----------------------------------

    def versions(self) -> list[str]:
        found = self.client.search_model_versions(f"name='{self.registry}'", max_results=100)
        return sorted((v.version for v in found), key=int)

    def champion(self) -> Any:
        return self.client.get_model_version_by_alias(self.registry, "champion")

    def tree(self, revision: str) -> dict[str, str]:
        with self.hub._lock:
            commit = self.hub.repos[self.repo].resolve(revision)
            assert commit is not None, revision
            return {path: blob.oid for path, blob in commit.files.items()}

    def upload_commits(self, version: str) -> int:
        """Commits on main that uploaded `version` (restores after a failure are not uploads)."""
        return sum(
            1
            for c in self.hub.commits(self.repo)
            if c.title.startswith(f"deploygate: {self.registry} v{version},")
        )

    def gate_runs(self) -> list[Any]:
        exp = self.client.get_experiment_by_name(self.experiment)
        return self.client.search_runs([exp.experiment_id], max_results=500)

    def assert_consistent(self, champion: str) -> None:
        """The invariant: the champion is READY and its recorded Hub commit holds the files on main."""
        mv = self.champion()
        assert mv.version == champion, f"champion is v{mv.version}, expected v{champion}"
        assert mv.status == "READY"
        recorded = mv.tags.get("deploygate.hf_commit")
        assert recorded, f"v{mv.version} has no deploygate.hf_commit tag"
        assert self.tree(recorded) == self.tree("main"), (
            f"Hub main does not hold the files of champion v{champion}"
        )
        with self.hub._lock:
            assert self.hub.repos[self.repo].tags.get(f"v{champion}") is not None

    def assert_completed(self, version: str, versions_before: list[str]) -> None:
        """After the re-run: one new version, promoted, pushed once, consistent."""
        assert self.versions() == [*versions_before, version], self.versions()
        assert self.upload_commits(version) == 1, (
            f"v{version} was uploaded {self.upload_commits(version)} times"
        )
        self.assert_consistent(version)
        self.scores[version] = float(self.champion().tags["deploygate.weighted_score"])

    def new_candidate(self, name: str) -> None:
        """A training run with its own adapter (so its merged weights are new LFS objects on the Hub)."""
        self.locations[name] = _seed_run(
            self.root / f"src-{name}",
            self.mlflow_uri,
            seed=len(self.locations) + 1,
            base=self.root / "src-base",
        )

    def faults_fired(self) -> int:
        with self.hub._lock:
            hub = sum(1 for r in self.hub.requests if r.fault)
        return self.proxy.injected + self.hub_proxy.injected + hub

    def next_version(self) -> str:
        return str(int(self.versions()[-1]) + 1)

    def failed_run_recorded(self, since: int, needle: str = "") -> bool:
        runs = sorted(self.gate_runs(), key=lambda r: r.info.start_time)[since:]
        return any(
            r.info.status == "FAILED" and needle in r.data.tags.get("deploygate.error", "") for r in runs
        )


def _seed_run(root: Path, uri: str, *, seed: int = 0, base: Path | None = None) -> dict[str, Any]:
    if base is None or not base.exists():
        base = make_tiny_llama(base or root / "base")
    adapter = make_lora_adapter(base, root / "art" / "peft", r=4, alpha=8, seed=seed)
    save_tiny_tokenizer(root / "tok")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"training-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(adapter), "model/peft")
    client.log_artifacts(run.info.run_id, str(root / "tok"), "tokenizer")
    client.set_terminated(run.info.run_id)
    return {
        "mlflow_run_id": run.info.run_id,
        "tracking_uri": uri,
        "dvc_stage": "fine_tuning",
        "model_name": "tiny-llama",
        "fine_tuned": True,
    }


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, mlflow_backend: Any, hub_server: HubServer
) -> Iterator[World]:
    mlflow_server = mlflow_backend
    root = tmp_path_factory.mktemp(f"faults-{mlflow_server.backend}")
    proxy = FaultProxy(mlflow_server.uri).start()
    hub_proxy = FaultProxy(hub_server.url).start()
    w = World(
        root=root,
        mlflow_uri=mlflow_server.uri,
        proxy=proxy,
        hub=hub_server,
        hub_proxy=hub_proxy,
        registry=f"faults-{uuid.uuid4().hex[:8]}",
        experiment=f"faults-{uuid.uuid4().hex[:8]}",
        repo=hub_server.new_repo_id("faults"),
        location={},
        client=MlflowClient(tracking_uri=mlflow_server.uri),
        backend=mlflow_server.backend,
    )
    w.location = _seed_run(root / "src-first", mlflow_server.uri, base=root / "src-base")
    first = w.gate("first", "1" * 40, 0.0)
    assert first.code == 0
    w.assert_completed("1", [])
    yield w
    proxy.stop()
    hub_proxy.stop()
    hub_server.clear_faults()
    _print_summary(w.backend)


@pytest.fixture
def fresh(world: World) -> Iterator[World]:
    """Faults never outlive a test."""
    world.proxy.clear()
    world.hub_proxy.clear()
    world.proxy.up()
    world.hub_proxy.up()
    world.hub.clear_faults()
    yield world
    world.proxy.clear()
    world.hub_proxy.clear()
    world.proxy.up()
    world.hub_proxy.up()
    world.hub.clear_faults()


def _tally(name: str, injected: int, *, survived_in_run: bool, backend: str = "sqlite") -> None:
    tally = _tally_of(backend)
    tally["scenarios"].append(name)
    tally["injected"].extend([name] * injected)
    (tally["survived"] if survived_in_run else tally["failed-safe"]).extend([name] * injected)


def _print_summary(backend: str) -> None:
    tally = _tally_of(backend)
    injected = len(tally["injected"])
    line = (
        f"fault summary ({backend}): {len(tally['scenarios'])} scenarios, {injected} faults injected, "
        f"{len(tally['survived'])} survived within the run (retried), {len(tally['failed-safe'])} failed safe "
        f"(champion and Hub consistent, re-run completed)"
    )
    print("\n" + line)
    if os.environ.get("DEPLOYGATE_FAULT_SUMMARY"):
        with Path(os.environ["DEPLOYGATE_FAULT_SUMMARY"]).open("a") as fh:
            fh.write(line + "\n")


def _candidate(w: World, name: str) -> tuple[str, float, str, list[str]]:
    """sha, delta (better than every deployed version), expected version, versions before."""
    before = w.versions()
    delta = 0.01 * len(before)
    sha = (name.encode().hex() + "0" * 40)[:40]
    w.new_candidate(name)
    return sha, delta, str(int(before[-1]) + 1), before


def _fail_then_rerun(
    w: World,
    capsys: pytest.CaptureFixture[str],
    name: str,
    arm: Callable[[], int],
    expect_in_err: str,
    *,
    recorded: bool = True,
) -> Outcome:
    """Arm a fault, run (it must fail safe), disarm, re-run (it must complete)."""
    sha, delta, version, before = _candidate(w, name)
    champion = w.champion().version
    runs_before = len(w.gate_runs())
    fired = w.faults_fired()
    arm()
    failed = w.gate(name, sha, delta, capsys=capsys)
    injected = w.faults_fired() - fired
    w.proxy.disarm()
    w.proxy.up()
    w.hub_proxy.disarm()
    w.hub.clear_faults()
    assert failed.code == 1, failed.err
    assert expect_in_err in failed.err, failed.err
    assert "Traceback" not in failed.err
    w.assert_consistent(champion)
    if recorded:
        assert w.failed_run_recorded(runs_before), "the failed gate run was not recorded as FAILED"
    again = w.gate(name, sha, delta, capsys=capsys)
    assert again.code == 0, again.err
    w.assert_completed(version, before)
    assert injected >= 1, "no fault fired"
    _tally(name, injected, survived_in_run=False, backend=w.backend)
    return failed


def _survive(w: World, capsys: pytest.CaptureFixture[str], name: str, arm: Callable[[], int]) -> Outcome:
    """Arm a transient fault: the run must retry through it and deploy."""
    sha, delta, version, before = _candidate(w, name)
    fired = w.faults_fired()
    armed = arm()
    res = w.gate(name, sha, delta, capsys=capsys)
    injected = w.faults_fired() - fired
    assert res.code == 0, res.err
    assert injected >= armed, f"only {injected} of {armed} faults fired"
    w.assert_completed(version, before)
    _tally(name, injected, survived_in_run=True, backend=w.backend)
    return res


# --- MLflow ----------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_mlflow_unreachable_at_start(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    def arm() -> int:
        fresh.proxy.down()
        return 1

    failed = _fail_then_rerun(fresh, capsys, "mlflow-down-at-start", arm, "unreachable", recorded=False)
    assert "MLFLOW_TRACKING_URI" in failed.err


def test_mlflow_stops_after_the_version_is_created(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The version exists (created by the server), then MLflow is gone: the run cannot even record
    its failure; the re-run reuses the version instead of registering a second one."""

    def arm() -> int:
        fresh.proxy.down_after("POST", VERSION_CREATE)
        return 1

    _fail_then_rerun(fresh, capsys, "mlflow-down-after-create", arm, "MLflow", recorded=False)


def test_alias_move_fails_after_the_hub_push(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The Hub already holds the candidate when the alias cannot move: main goes back to the champion."""

    def arm() -> int:
        fresh.proxy.fail("POST", ALIAS_POST, 503, times=-1)
        return 1

    _fail_then_rerun(fresh, capsys, "alias-503-persistent", arm, "MLflow")
    # MLflow's own retries, bounded: 1 + MLFLOW_HTTP_REQUEST_MAX_RETRIES per alias move (the gate tries once)
    attempts = 1 + int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"))
    assert len([r for r in fresh.proxy.requests("POST", ALIAS_POST) if r.fault]) == attempts


def test_champion_unreadable_is_not_a_first_model(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A 5xx on the alias lookup must fail the run, not read as "no champion yet" (which would deploy)."""

    def arm() -> int:
        fresh.proxy.fail("GET", ALIAS_POST, 503, times=-1)
        return 1

    _fail_then_rerun(fresh, capsys, "champion-read-503", arm, "MLflow", recorded=False)


def test_transient_mlflow_errors_are_retried(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    def arm() -> int:
        fresh.proxy.fail("GET", r"^/health$", 503, times=1)
        fresh.proxy.drop("POST", VERSION_CREATE, times=1)
        fresh.proxy.fail("POST", ALIAS_POST, 429, times=1)
        fresh.proxy.fail("POST", r"/runs/log-batch$", 502, times=1)
        return 4

    _survive(fresh, capsys, "mlflow-transient", arm)
    assert fresh.proxy.injected >= 4


@SQLITE_ONLY
@pytest.mark.parametrize("status", [401, 403, 404])
def test_permanent_mlflow_errors_are_not_retried(
    fresh: World, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    def arm() -> int:
        fresh.proxy.fail("POST", ALIAS_POST, status, times=-1)
        return 1

    failed = _fail_then_rerun(fresh, capsys, f"alias-{status}", arm, "MLflow")
    assert len([r for r in fresh.proxy.requests("POST", ALIAS_POST) if r.fault]) == 1, (
        "a permanent error was retried"
    )
    assert "Fix:" in failed.err or "check" in failed.err.lower()


# --- the Hub ---------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_hub_transient_errors_during_upload_and_commit(
    fresh: World, capsys: pytest.CaptureFixture[str]
) -> None:
    def arm() -> int:
        fresh.hub_proxy.fail("POST", HUB_PREUPLOAD, 500, times=1)
        fresh.hub.fail_next("PUT", LFS_PUT, status=503, times=1)
        fresh.hub_proxy.drop("POST", HUB_COMMIT, times=1)
        fresh.hub_proxy.fail("POST", r"/tag/", 429, times=1)
        return 4

    _survive(fresh, capsys, "hub-transient", arm)


@SQLITE_ONLY
def test_hub_commit_response_lost(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The Hub applied the commit but the answer never came: the retry must not commit again."""

    def arm() -> int:
        fresh.hub_proxy.lose_response("POST", HUB_COMMIT, times=1)
        fresh.hub_proxy.lose_response("POST", r"/tag/", times=1)
        return 2

    _survive(fresh, capsys, "hub-commit-lost-response", arm)


@SQLITE_ONLY
def test_hub_hangs_then_drops(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    def arm() -> int:
        fresh.hub.hang_next("POST", HUB_COMMIT, seconds=1.5, times=1)
        fresh.hub.hang_next("POST", HUB_PREUPLOAD, seconds=1.5, times=1)
        return 2

    _survive(fresh, capsys, "hub-hang", arm)


@SQLITE_ONLY
def test_hub_500_persistent_on_commit(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    def arm() -> int:
        fresh.hub_proxy.fail("POST", HUB_COMMIT, 500, times=-1)
        return 1

    _fail_then_rerun(fresh, capsys, "hub-commit-500", arm, "Hub")
    assert (
        len([r for r in fresh.hub_proxy.requests("POST", HUB_COMMIT) if r.fault]) == 4
    )  # 1 + 3 retries, bounded


@SQLITE_ONLY
def test_hub_drops_lfs_uploads_in_a_row(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    """(A Hub that drops every upload for good takes huggingface_hub's 5 retries x deploygate's 4
    attempts, ~1.5 min, before failing safe like the persistent commit 500 above.)"""

    def arm() -> int:
        fresh.hub.drop_next("PUT", LFS_PUT, times=3)
        return 3

    _survive(fresh, capsys, "hub-lfs-drop-3-in-a-row", arm)


@SQLITE_ONLY
@pytest.mark.parametrize("status", [401, 403])
def test_permanent_hub_errors_are_not_retried(
    fresh: World, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    def arm() -> int:
        fresh.hub_proxy.fail("POST", HUB_COMMIT, status, times=-1)
        return 1

    failed = _fail_then_rerun(
        fresh, capsys, f"hub-commit-{status}", arm, "HF_TOKEN" if status == 401 else "write"
    )
    assert len([r for r in fresh.hub_proxy.requests("POST", HUB_COMMIT) if r.fault]) == 1
    assert "Fix:" in failed.err


@pytest.mark.parametrize("status", [500, 403])
def test_tag_call_fails_after_the_hub_commit(
    fresh: World, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    """The commit landed on main, the tag call did not: main goes back to the champion in the same
    run (a later run that skips must not be the one to repair it), and the re-run tags the commit it
    already pushed instead of uploading again."""

    def arm() -> int:
        fresh.hub_proxy.fail("POST", r"/tag/", status, times=-1)
        return 1

    _fail_then_rerun(fresh, capsys, f"hub-tag-{status}-after-commit", arm, "Hub")


def test_rerun_with_hf_export_dir_after_a_failure(fresh: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented recovery with --hf-export-dir: the card of a version is rendered from what MLflow
    recorded for it (registration, gate run, creation time), so the re-run builds the same bytes as
    the tagged push instead of failing on "tag already exists with different files"."""
    w = fresh
    sha, delta, version, before = _candidate(w, "export-rerun")
    champion = w.champion().version
    export = w.root / "export-rerun-folder"
    fired = w.faults_fired()
    w.proxy.fail("POST", ALIAS_POST, 503, times=-1)
    failed = w.gate("export-rerun", sha, delta, extra=("--hf-export-dir", str(export)), capsys=capsys)
    injected = w.faults_fired() - fired
    w.proxy.disarm()
    assert failed.code == 1, failed.err
    w.assert_consistent(champion)
    first_card = (export / "README.md").read_bytes()
    time.sleep(1.1)  # a later second: a card stamped with the clock would differ
    again = w.gate("export-rerun", sha, delta, extra=("--hf-export-dir", str(export)), capsys=capsys)
    assert again.code == 0, again.err
    w.assert_completed(version, before)
    assert (export / "README.md").read_bytes() == first_card
    exported = {p.relative_to(export).as_posix(): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    on_hub = dict(iter_repo_files(w.hub, w.repo, f"v{version}"))
    assert exported == {path: data for path, data in on_hub.items() if path != ".gitattributes"}
    _tally("export-dir-rerun", injected, survived_in_run=False)


def test_hub_timeout_is_bounded(hub_server: HubServer) -> None:
    """huggingface_hub has no timeout of its own: a server that never answers must not hang the gate."""
    from deploygate.adapters.hf_hub import HubPublisher

    publisher = HubPublisher(hub_server.token, hub_server.url, retries=1, backoff=0.0, timeout=1.0)
    hub_server.hang_next("GET", r"^/api/whoami-v2$", seconds=30, times=1)
    started = time.monotonic()
    try:
        assert publisher.whoami() == hub_server.user
    finally:
        hub_server.clear_faults()
    assert time.monotonic() - started < 10
    _tally("hub-read-timeout", 1, survived_in_run=True)


# --- SIGKILL between steps -------------------------------------------------------------------------

# (name, proxy, method, path, when): kill the gate process when that request arrives ("before") or was answered
KILL_POINTS = [
    ("kill-after-gate-run-created", "mlflow", "POST", r"/runs/create$", "after"),
    ("kill-after-version-created", "mlflow", "POST", VERSION_CREATE, "after"),
    ("kill-during-hub-commit", "hub", "POST", HUB_COMMIT, "before"),
    ("kill-after-hub-commit", "hub", "POST", HUB_COMMIT, "after"),
    ("kill-before-alias-move", "mlflow", "POST", ALIAS_POST, "before"),
    ("kill-after-alias-move", "mlflow", "POST", ALIAS_POST, "after"),
]


MLFLOW_KILLS = [k for k in KILL_POINTS if k[1] == "mlflow"]
HUB_KILLS = [k for k in KILL_POINTS if k[1] == "hub"]


@pytest.mark.parametrize(
    ("name", "where", "method", "path", "when"), MLFLOW_KILLS, ids=[k[0] for k in MLFLOW_KILLS]
)
def test_sigkill_between_mlflow_steps(
    fresh: World, capsys: pytest.CaptureFixture[str], name: str, where: str, method: str, path: str, when: str
) -> None:
    _sigkill_between_steps(fresh, capsys, name, where, method, path, when)


@SQLITE_ONLY  # what a kill around a Hub request leaves depends on the Hub alone
@pytest.mark.parametrize(
    ("name", "where", "method", "path", "when"), HUB_KILLS, ids=[k[0] for k in HUB_KILLS]
)
def test_sigkill_around_hub_steps(
    fresh: World, capsys: pytest.CaptureFixture[str], name: str, where: str, method: str, path: str, when: str
) -> None:
    _sigkill_between_steps(fresh, capsys, name, where, method, path, when)


def _sigkill_between_steps(
    fresh: World, capsys: pytest.CaptureFixture[str], name: str, where: str, method: str, path: str, when: str
) -> None:
    w = fresh
    sha, delta, version, before = _candidate(w, name)
    champion = w.champion().version
    killed = threading.Event()
    holder: dict[str, subprocess.Popen[bytes]] = {}

    def kill() -> None:
        holder["p"].send_signal(signal.SIGKILL)
        holder["p"].wait()
        killed.set()

    proxy = w.proxy if where == "mlflow" else w.hub_proxy
    if when == "before":
        proxy.on(method, path, before=kill)
    else:
        proxy.on(method, path, after_answer=kill)
    holder["p"] = w.spawn(name, sha, delta)
    code = holder["p"].wait(timeout=240)
    w.proxy.clear()
    w.hub_proxy.clear()
    assert killed.is_set(), (
        f"the gate finished (exit {code}) before reaching {method} {path}:\n"
        + (w.root / f"{name}.log").read_text()[-2000:]
    )
    # After a kill there is nobody left to clean up: either nothing visible moved, or the Hub's main
    # is one step ahead (it holds the tagged, registered candidate that has not been promoted yet).
    moved = w.champion().version
    if moved == champion:
        main = w.tree("main")
        pushed = None
        with w.hub._lock:
            tag = w.hub.repos[w.repo].tags.get(f"v{version}")
        if tag is not None:
            pushed = w.tree(tag)
        if pushed is None:  # killed between the commit and the tag: main's head is this version's push
            head = w.hub.commits(w.repo)[0]
            if head.title.startswith(f"deploygate: {w.registry} v{version},"):
                pushed = main
        champ_files = w.tree(w.champion().tags["deploygate.hf_commit"])
        assert main == champ_files or (pushed is not None and main == pushed), (
            "Hub main holds an unknown model"
        )
        in_flight = main != champ_files
    else:
        assert moved == version
        w.assert_consistent(version)
        in_flight = False
    again = w.gate(name, sha, delta, capsys=capsys)
    assert again.code == 0, again.err
    w.assert_completed(version, before)
    _tally_of(w.backend).setdefault("in-flight", []).extend([name] if in_flight else [])
    _tally(name, 1, survived_in_run=False, backend=w.backend)
    print(json.dumps({"kill": name, "in_flight_window": in_flight}))


# --- a failed artifact read is not an absent artifact ------------------------------------------------

STATS_GET = r"/mlflow-artifacts/artifacts/.*evaluation/example_stats\.json"


def test_unreadable_champion_statistics_are_an_error_not_absent(
    fresh: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 4: a 503 (or a dropped connection) on the champion's per-example statistics read as "the
    champion has none", so the point rule decided and a not-significant candidate was promoted. A
    transient failure is retried; a lasting one fails the run (exit 1) and moves nothing."""
    from tests.gatekit import run_gate
    from tests.integration.test_significance import CHAMPION, NOISY, jsonl

    w = fresh
    registry, experiment = f"stats-{uuid.uuid4().hex[:8]}", f"stats-{uuid.uuid4().hex[:8]}"

    def gate(name: str, sha: str, preds: list[str]) -> Any:
        with environ({"GITHUB_SHA": sha * 40}):
            return run_gate(
                tmp_path,
                capsys,
                uri=w.proxy.url,
                registry=registry,
                experiment=experiment,
                name=name,
                extra=["--predictions", str(jsonl(tmp_path, name, preds))],
            )

    assert gate("champ", "1", CHAMPION).code == 0
    champion = w.client.get_model_version_by_alias(registry, "champion").version

    w.proxy.drop("GET", STATS_GET, times=1)  # one dropped connection: retried, the test still decides
    transient = gate("noisy-1", "2", NOISY)
    assert transient.code == 0, transient.err
    assert (transient.info()["rule"], transient.info()["deployed"]) == ("not-significant", False)

    fired = w.proxy.injected
    w.proxy.fail("GET", STATS_GET, 503, times=-1)
    failed = gate("noisy-2", "3", NOISY)
    injected = w.proxy.injected - fired
    w.proxy.disarm()
    assert failed.code == 1, failed.err
    assert "example_stats.json" in failed.err and "Traceback" not in failed.err
    assert w.client.get_model_version_by_alias(registry, "champion").version == champion
    assert len(w.client.search_model_versions(f"name='{registry}'", max_results=10)) == 1
    _tally("artifact-read-drop", 1, survived_in_run=True, backend=w.backend)
    _tally("artifact-read-503-persistent", injected, survived_in_run=False, backend=w.backend)
