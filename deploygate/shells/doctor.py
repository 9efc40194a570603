"""`deploygate doctor`: the troubleshooting checklist as one command. It writes nothing.

Checks, in order, each printed as one `OK` / `FAIL` line with the fix under a FAIL: the `.env` file,
params.yaml (values and key spellings), which tracking URI is used and where it came from, the local
store (without creating it) or the MLflow server, the credentials, the model registry, and the Hub
token (whenever one is set) and repo. A local store that does not exist yet is reported, not
created: opening it with MLflow would create the database.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deploygate.core.errors import EXIT_FAILURE, EXIT_OK, DeployGateError, first_line
from deploygate.core.redact import redact
from deploygate.core.settings import GateConfig, tracking_uri_and_source

CREDENTIAL_VARS = (
    "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or DAGSHUB_USERNAME / DAGSHUB_USER_TOKEN)"
)


class Checklist:
    """Prints each check as it is made; remembers whether any failed."""

    def __init__(self) -> None:
        self.failed = 0

    def ok(self, name: str, detail: str) -> None:
        print(redact(f"OK   {name}: {detail}"))  # SDK texts name URLs, credentials included

    def fail(self, name: str, detail: str, fix: str | None = None) -> None:
        self.failed += 1
        print(redact(f"FAIL {name}: {detail}"))
        if fix:
            print(redact(f"     fix: {fix}"))

    def error(self, name: str, exc: DeployGateError) -> None:
        """A deploygate error: its message says what failed, then the fix (its hint, or the part after ';')."""
        message, fix = exc.message.removeprefix(f"{name}: "), exc.hint
        if fix is None and "; " in message:
            message, fix = message.split("; ", 1)
        self.fail(name, message, fix.removeprefix("Fix: ") if fix else None)

    def attempt(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except DeployGateError as exc:
            self.error(name, exc)
            return False
        except Exception as exc:  # an SDK failing in a way deploygate did not translate
            self.fail(
                name,
                f"{type(exc).__name__}: {first_line(exc, default='')}",
                "run again with -v, and report it if it persists",
            )
            return False
        self.ok(name, detail)
        return True


def _config(
    ns: argparse.Namespace, env: Mapping[str, str], checks: Checklist
) -> tuple[dict[str, Any], GateConfig | None]:
    from deploygate.bootstrap import load_config_params, prepare_config

    path = Path(ns.config) if ns.config else Path("params.yaml")
    given = {
        k: v
        for k, v in (
            ("config", ns.config),
            ("mlflow-tracking-uri", ns.mlflow_tracking_uri),
            ("hf-model-id", ns.hf_model_id),
            ("base-model", getattr(ns, "base_model", None)),
            ("max-shard-size", getattr(ns, "max_shard_size", None)),
        )
        if v is not None
    }
    try:
        params = load_config_params(given)
    except DeployGateError as exc:
        checks.error("config", exc)
        return {}, None
    try:
        cfg = prepare_config(given, env, params=params)
    except DeployGateError as exc:
        checks.error("config", exc)
        return params, None
    if path.exists():
        checks.ok("config", f"{path}: every deployment: and mlflow: key is known and valid")
    else:
        checks.ok("config", f"no {path}: the defaults are used (optional)")
    return params, cfg


def run_doctor(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from deploygate.bootstrap import apply_connection_env

    checks = Checklist()
    env_keys = tuple(getattr(ns, "env_file_keys", ()) or ())
    if (env_error := getattr(ns, "env_file_error", None)) is not None:
        checks.error(".env", env_error)
    elif Path(".env").is_file():
        checks.ok(".env", f"read: {', '.join(env_keys) or 'nothing new'} (the environment wins over it)")
    params, cfg = _config(ns, env, checks)
    uri, origin = _tracking_uri(ns, env, params, cfg)
    if origin == "MLFLOW_TRACKING_URI" and "MLFLOW_TRACKING_URI" in env_keys:
        origin = "MLFLOW_TRACKING_URI in .env"
    apply_connection_env(os.environ)
    _check_mlflow(checks, uri, origin, os.environ)
    _check_hub(checks, ns.hf_model_id or (cfg.hf_model_id if cfg is not None else None), env)
    if cfg is not None:
        _check_resources(checks, cfg, env)
    print(
        "all checks passed"
        if not checks.failed
        else f"{checks.failed} check{'s' if checks.failed > 1 else ''} failed: see the FAIL lines above"
    )
    return EXIT_OK if not checks.failed else EXIT_FAILURE


def _tracking_uri(
    ns: argparse.Namespace, env: Mapping[str, str], params: Mapping[str, Any], cfg: GateConfig | None
) -> tuple[str, str]:
    if cfg is not None:
        return cfg.mlflow_tracking_uri, cfg.tracking_uri_source
    # the config is broken: still check the connection it would most likely use
    section = params.get("mlflow")
    return tracking_uri_and_source(
        ns.mlflow_tracking_uri,
        env.get("MLFLOW_TRACKING_URI") or None,
        section.get("tracking_uri") if isinstance(section, dict) else None,
    )


def _check_mlflow(checks: Checklist, uri: str, origin: str, env: Mapping[str, str]) -> None:
    """The tracking URI, the credentials, the store or server, and its model registry."""
    from deploygate.adapters.mlflow_registry import MlflowRegistry
    from deploygate.core.records import local_store, local_ui_command
    from deploygate.shells.action import display_url

    user = env.get("MLFLOW_TRACKING_USERNAME")
    has_password = bool(env.get("MLFLOW_TRACKING_PASSWORD") or env.get("MLFLOW_TRACKING_TOKEN"))
    store = local_store(uri)
    checks.ok("tracking URI", f"{display_url(uri)} (from {origin})")
    if store is not None:
        checks.ok(
            "credentials",
            (f"user {user} is set, unused" if user else "no credentials set")
            + ": none are needed for a local store",
        )
        if not store.exists():
            checks.ok(
                "local store", f"{store} does not exist yet: the first gate run creates it (not created now)"
            )
            return
        what, answer = "local store", f"{store} opens; browse it with {local_ui_command(uri)}"
    else:
        if user or has_password:
            checks.ok(
                "credentials", f"user {user or '(none)'}, password {'set' if has_password else 'not set'}"
            )
        else:
            checks.ok("credentials", f"no credentials set (set {CREDENTIAL_VARS} if the server needs them)")
        what = "MLflow server"
        answer = " and accepts the credentials" if user or has_password else " without credentials"
    try:
        registry = MlflowRegistry(uri)
        registry.check()
    except DeployGateError as exc:
        checks.error(what, exc)
        return
    checks.ok(what, answer if store is not None else f"{registry.display_uri} answers{answer}")
    checks.attempt("model registry", registry.check_registry)


def _check_resources(checks: Checklist, cfg: GateConfig, env: Mapping[str, str]) -> None:
    """The disk and memory a deploy of the base model needs, from its safetensors headers (no
    download), against this machine's free disk and available memory."""
    if not cfg.base_model:
        checks.ok("resources", "no base-model set: give --base-model (a Hub id or a folder) to estimate them")
        return
    if not cfg.merge:
        checks.ok("resources", "merge is off: only the adapter is pushed")
        return
    from deploygate.adapters.lora_merge import LoraMerger
    from deploygate.adapters.machine import LocalMachine
    from deploygate.bootstrap import hub_client
    from deploygate.service.ship import check_resources

    base = str(cfg.base_model)
    push = bool(cfg.hf_model_id) and not cfg.skip_hf_push

    def check() -> str:
        line = check_resources(
            cfg, base, hub=hub_client(env), merger=LoraMerger(), machine=LocalMachine(), push=push
        )
        return line or f"{base}: its weights are not safetensors, so they cannot be estimated"

    checks.attempt("resources", check)


def _check_hub(checks: Checklist, repo: str | None, env: Mapping[str, str]) -> None:
    from deploygate.bootstrap import hub_client

    hub = hub_client(env)
    if hub.token:
        if checks.attempt("Hub token", lambda: f"belongs to {hub.whoami()}") and repo:
            checks.attempt("Hub repo", lambda: hub.check_repo_access(str(repo)))
    elif repo:
        checks.fail(
            "Hub token",
            f"no token set, and hf-model-id is {repo}",
            "set HF_TOKEN (or HUGGINGFACE_HUB_TOKEN) to a write token from your Hub account settings",
        )
    else:
        checks.ok("Hub", "no token set and no hf-model-id: nothing is pushed (set both to push)")
