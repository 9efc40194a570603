"""pytest fixtures for the local Hub-compatible server (tests/hub_server.py).

`hub_server` is session-scoped: one server on 127.0.0.1 for the whole run. Tests must not share
repos: use `hub_server.new_repo_id()` (or the `hub_repo_id` fixture) for a fresh name. The fixture
turns off Xet uploads in `huggingface_hub` (a test server speaks the LFS batch API only) and
restores the setting afterwards. It never talks to the real Hub.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.hub_server import HubServer

_lock = threading.Lock()
_server: HubServer | None = None


def _shared_server() -> HubServer:
    # One server per process even if the fixture is imported into several modules / conftests.
    global _server
    with _lock:
        if _server is None:
            _server = HubServer().start()
        return _server


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The running server: `.url`, `.token`, `.readonly_token`, `.lfs_bytes_received`, `.fail_next(...)`,
    `.drop_next(...)`, `.hang_next(...)`, `.requests`, `.new_repo_id()`."""
    from huggingface_hub import constants

    server = _shared_server()
    previous = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield server
    finally:
        constants.HF_HUB_DISABLE_XET = previous


@pytest.fixture
def hub_repo_id(hub_server: HubServer) -> Iterator[str]:
    """A repo id no other test uses; faults left over by the test are cleared afterwards."""
    yield hub_server.new_repo_id()
    hub_server.clear_faults()
