"""PostgreSQL behind MLflow for the tests: a throwaway cluster from Debian's `postgresql` package on
127.0.0.1 (its own data folder, removed at the end) and a second `mlflow server` backed by it
(psycopg2), each started once per session, only when a test asks for them, and stopped at the end.

SQL backends behave differently from sqlite: they enforce column lengths (a registered-model tag
holds at most 5,000 characters) and answer concurrent inserts with their own wording
(`UniqueViolation`). `mlflow_backend` is parametrised over both servers for the suites that must
hold on either (faults, concurrency, history). Without PostgreSQL installed the postgresql cases
are skipped with the reason, except under CI (`CI=true`), where .ci/run installs it and a missing
cluster is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mlflow_fixtures import MlflowServer, free_port, start_mlflow_server, stop_mlflow_server

BACKENDS = ("sqlite", "postgresql")
# For a test in a both-backends suite whose outcome the database cannot change (a proxy or Hub fault).
SQLITE_ONLY = pytest.mark.parametrize("mlflow_backend", ["sqlite"], indirect=True)


def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and pg_ctl (Debian's layout)."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file() and bindir.parent.name.isdigit():
            found.append((int(bindir.parent.name), bindir))
    return max(found)[1] if found else None


@dataclass
class Postgres:
    bindir: Path
    data: Path
    port: int
    log_path: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _as_postgres() -> dict[str, object]:
    """PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    import pwd

    entry = pwd.getpwnam("postgres")
    os.chown(path, entry.pw_uid, entry.pw_gid)


def start_postgres(root: Path, timeout: float = 60.0) -> Postgres:
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: apt-get install -y postgresql")
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir()
    log_path = root / "postgres.log"
    log_path.touch()
    for path in (root, data, log_path):
        _give_to_postgres(path)
    user = _as_postgres()
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        **user,
    )  # type: ignore[call-overload]
    port = free_port()
    # Only TCP on 127.0.0.1 (no socket in /var/run); durability off: the cluster lives for one session.
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        check=True,
        capture_output=True,
        **user,
    )  # type: ignore[call-overload]
    server = Postgres(bindir=bindir, data=data, port=port, log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.create_database("mlflow")
            return server
        except Exception:
            if time.monotonic() > deadline:
                stop_postgres(server)
                raise
            time.sleep(0.5)


def stop_postgres(server: Postgres) -> None:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(
            [str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
            **_as_postgres(),
        )  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The cluster's folder is its own `mkdtemp` in the system tmp, not in pytest's session tmp: that
    tree is private to root (0700) and pytest resets it to 0700 whenever a session starts, which
    locks the postgres user out of its data folder mid-run (the checkpointer aborts)."""
    if postgres_bindir() is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="deploygate-postgres-"))
    try:
        server = start_postgres(root)
        yield server
        stop_postgres(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_pg_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-pg-server"), backend_uri=postgres.url("mlflow")
    )
    yield server
    stop_mlflow_server(server)


@pytest.fixture(scope="session", params=BACKENDS)
def mlflow_backend(request: pytest.FixtureRequest) -> MlflowServer:
    """The sqlite-backed server, then the PostgreSQL-backed one (`.backend` says which)."""
    server: MlflowServer = request.getfixturevalue(
        "mlflow_server" if request.param == "sqlite" else "mlflow_pg_server"
    )
    return server
