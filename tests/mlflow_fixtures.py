"""A real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1 for the whole session
(tests/pg_fixtures.py starts a second one on PostgreSQL).

Starting one takes ~25 s, so there is one per test session; tests get a fresh registered model
and experiment name each (`registry_name`, `experiment_name`) and never see each other's state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MlflowServer:
    uri: str
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    backend: str = "sqlite"

    def alive(self) -> bool:
        try:
            return requests.get(self.uri + "/health", timeout=2).ok
        except requests.RequestException:
            return False


# Kills a process group once the process that started it is gone: an xdist worker that crashes (or is
# stopped by -x) never runs its session teardown, and its servers would stay up for good.
_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while True:
    time.sleep(1)
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        sys.exit(0)  # stopped by its teardown
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
try:
    os.killpg(group, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def stop_with_this_process(group: int) -> None:
    """Stop process group `group` (a server started with start_new_session=True) when this process dies."""
    subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(group)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_mlflow_server(
    root: Path, port: int | None = None, timeout: float = 120.0, backend_uri: str | None = None
) -> MlflowServer:
    """`backend_uri`: a SQLAlchemy URL for the tracking and registry store (default: sqlite in `root`)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = root / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri or f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    stop_with_this_process(process.pid)
    server = MlflowServer(
        uri=f"http://127.0.0.1:{port}",
        root=root,
        process=process,
        log_path=log_path,
        backend=(backend_uri or "sqlite").split(":")[0].split("+")[0],
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        if server.alive():
            return server
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the server's uvicorn and huey children too
    raise RuntimeError(
        f"mlflow server did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}"
    )


def stop_mlflow_server(server: MlflowServer) -> None:
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    stop_mlflow_server(server)


@pytest.fixture
def registry_name() -> str:
    return f"model-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def experiment_name() -> str:
    return f"gate-{uuid.uuid4().hex[:10]}"
