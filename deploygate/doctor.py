"""`deploygate doctor`: the seed's troubleshooting section as one command.

Checks, in order, and says exactly what is wrong with each: which tracking URI is used and where
it came from, whether the MLflow server answers, whether the credentials are accepted, whether the
registry answers, and (when a Hub repo is configured or a token is set) the Hub token and repo.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploygate.config import DEFAULT_LOCAL_TRACKING_URI
from deploygate.errors import EXIT_FAILURE, EXIT_OK, DeployGateError
from deploygate.inputs import load_params


def _tracking_uri(ns: argparse.Namespace, env: Mapping[str, str], params: dict[str, Any]) -> tuple[str, str]:
    if ns.mlflow_tracking_uri:
        return ns.mlflow_tracking_uri, "--mlflow-tracking-uri"
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    uri = (params.get("mlflow") or {}).get("tracking_uri")
    if uri:
        return str(uri), "params.yaml mlflow.tracking_uri"
    return DEFAULT_LOCAL_TRACKING_URI, "default (local store)"


def run_doctor(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from deploygate.app import apply_connection_env, hub_client
    from deploygate.redact import redact
    from deploygate.registry import MlflowRegistry

    ok = True

    def report(good: bool, text: str) -> None:
        nonlocal ok
        ok &= good
        print(f"{'ok ' if good else 'FAIL'} {redact(text)}")  # SDK texts name URLs, credentials included

    config = Path(ns.config) if ns.config else Path("params.yaml")
    try:
        params = load_params(config, explicit=ns.config is not None)
        report(True, f"config: {config if config.exists() else 'none (defaults)'}")
    except DeployGateError as exc:
        report(False, str(exc))
        params = {}
    apply_connection_env(os.environ)
    uri, origin = _tracking_uri(ns, env, params)
    registry = None
    try:
        registry = MlflowRegistry(uri)
        report(True, f"tracking URI {registry.display_uri} (from {origin})")
    except DeployGateError as exc:
        report(False, str(exc))
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    print(f"info credentials: {'user ' + user if user else 'none set (MLFLOW_TRACKING_USERNAME / DAGSHUB_USERNAME)'}")
    if registry is not None:
        try:
            report(True, registry.check())
            registry.client.search_registered_models(max_results=1)
            report(True, "model registry answers")
        except DeployGateError as exc:
            report(False, str(exc))
        except Exception as exc:
            report(False, f"model registry at {registry.display_uri} does not answer: {str(exc).splitlines()[0]}")

    repo = ns.hf_model_id or ((params.get("deployment") or {}).get("huggingface") or {}).get("model_id")
    hub = hub_client(env)
    if repo or hub.token:
        if not hub.token:
            report(False, "Hub: no token; set HF_TOKEN (a write token from your Hub account settings)")
        else:
            try:
                report(True, f"Hub token belongs to {hub.whoami()}")
                if repo:
                    report(True, hub.check_repo_access(str(repo)))
            except DeployGateError as exc:
                report(False, str(exc))
    print("all checks passed" if ok else "some checks failed: see the FAIL lines above")
    return EXIT_OK if ok else EXIT_FAILURE
