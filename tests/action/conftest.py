"""Fixtures for the action tests: the harness (real MLflow server) and the fake GitHub API."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.action.harness import ActionHarness
from tests.github_api_server import github_api  # noqa: F401  (fixture)
from tests.mlflow_fixtures import MlflowServer


@pytest.fixture
def action(
    tmp_path: Path, mlflow_server: MlflowServer, registry_name: str, experiment_name: str
) -> ActionHarness:
    return ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)
