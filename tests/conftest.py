"""Shared fixtures: the real MLflow servers (sqlite, and PostgreSQL when asked for) and the local Hub
server, started once per session."""

from __future__ import annotations

import os

# Tests never reach the internet; the Hub client must take the LFS path against the local server.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
# as deploygate.adapters.mlflow_registry does, for the tests' own `import mlflow` (they come first)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
for _var in (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "HF_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "DAGSHUB_USERNAME",
    "DAGSHUB_USER_TOKEN",
    "DAGSHUB_TOKEN",
):
    os.environ.pop(_var, None)  # a developer's own credentials must never leak into a test run

from tests.hub_fixtures import hub_repo_id, hub_server  # noqa: E402,F401
from tests.mlflow_fixtures import experiment_name, mlflow_server, registry_name  # noqa: E402,F401
from tests.pg_fixtures import mlflow_backend, mlflow_pg_server, postgres  # noqa: E402,F401
