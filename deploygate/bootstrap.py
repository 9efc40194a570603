"""The one place that builds the real adapters and wires them into the services: environment ->
connection settings and run context, files -> candidate, adapters -> one gate run (or rollback).

The CLI and the action shell both call `prepare` and `execute`; they read os.environ and argv and
pass what they read in here. Tests wire the in-memory fakes of tests/fakes.py instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploygate.adapters.files import load_model_source, load_params, read_json, read_text
from deploygate.adapters.mlflow_registry import MlflowRegistry
from deploygate.adapters.result_files import ResultFiles
from deploygate.core.errors import ConfigError, MetricsError
from deploygate.core.metrics import parse_metrics
from deploygate.core.model import Candidate, GateResult, RunContext
from deploygate.core.settings import GateConfig, build_config
from deploygate.core.signature import signature_for
from deploygate.ports import Shipper
from deploygate.service.gate import run

if TYPE_CHECKING:
    from deploygate.adapters.hf_hub import HubPublisher
    from deploygate.core.evaluation import ExampleStats
    from deploygate.core.model import RollbackResult
    from deploygate.core.signing import VerifyResult
    from deploygate.ports import SignatureVerifier, Signer

log = logging.getLogger(__name__)

# Every environment variable that may hold a secret; the action masks these (and its secret
# inputs) before printing anything, and nothing deploygate writes ever contains them.
SECRET_ENV = (
    "HF_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "DAGSHUB_USER_TOKEN",
    "DAGSHUB_TOKEN",
    "GITHUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "SIGSTORE_ID_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)


def connection_env(env: Mapping[str, str]) -> dict[str, str]:
    """Environment updates for the MLflow client: DagsHub fallbacks and fail-fast HTTP settings.

    The seed's CI sets DAGSHUB_USERNAME + DAGSHUB_USER_TOKEN / DAGSHUB_TOKEN; MLflow only reads
    MLFLOW_TRACKING_USERNAME / PASSWORD. MLflow retries a dead server for minutes by default; a
    gate should say so in seconds.
    """
    updates: dict[str, str] = {}
    if not env.get("MLFLOW_TRACKING_USERNAME") and env.get("DAGSHUB_USERNAME"):
        updates["MLFLOW_TRACKING_USERNAME"] = env["DAGSHUB_USERNAME"]
    if not env.get("MLFLOW_TRACKING_PASSWORD"):
        token = env.get("DAGSHUB_USER_TOKEN") or env.get("DAGSHUB_TOKEN")
        if token:
            updates["MLFLOW_TRACKING_PASSWORD"] = token
    defaults = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    }
    updates.update({k: v for k, v in defaults.items() if not env.get(k)})
    return updates


def apply_connection_env(env: MutableMapping[str, str]) -> None:
    env.update(connection_env(env))


def git_sha(cwd: Path | None = None) -> str | None:
    """HEAD of the git repository around `cwd`, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else None


def is_fork_pull_request(event: Mapping[str, Any]) -> bool:
    """A PR whose head lives in another repository (or a deleted one) than its base."""
    pr = event.get("pull_request")
    if not isinstance(pr, dict):
        return False
    head_repo = (pr.get("head") or {}).get("repo")
    base_repo = (pr.get("base") or {}).get("repo") or {}
    if not isinstance(head_repo, dict):
        return True  # the fork was deleted: GitHub sends null
    return bool(head_repo.get("full_name")) and head_repo.get("full_name") != base_repo.get("full_name")


def context_from_env(env: Mapping[str, str], *, event: Mapping[str, Any] | None = None) -> RunContext:
    """Where this run happens: GitHub Actions facts when present, else a local shell."""
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo = env.get("GITHUB_REPOSITORY") or None
    run_id = env.get("GITHUB_RUN_ID")
    ci_url = f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None
    event = event or {}
    pr = event.get("pull_request") if isinstance(event.get("pull_request"), dict) else None
    pr_number = pr.get("number") if pr else None
    is_fork = is_fork_pull_request(event)
    return RunContext(
        event_name=env.get("GITHUB_EVENT_NAME") or "cli",
        git_sha=env.get("GITHUB_SHA") or git_sha(),
        git_ref=env.get("GITHUB_REF") or None,
        repository=repo,
        actor=env.get("GITHUB_ACTOR") or env.get("USER") or None,
        ci_run_url=ci_url,
        pr_number=pr_number if isinstance(pr_number, int) else None,
        is_fork=is_fork,
    )


def load_config_params(given: Mapping[str, Any]) -> dict[str, Any]:
    """The params.yaml the settings name (`config`), or ./params.yaml when it exists: the one loader
    of every command (gate, rollback, adopt, doctor)."""
    config_given = given.get("config")
    config_path = Path(str(config_given)) if config_given else Path("params.yaml")
    return load_params(config_path, explicit=config_given is not None)


def prepare_config(
    given: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    source_names: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> GateConfig:
    """params.yaml + given settings + defaults -> the frozen config; InputError on anything wrong."""
    return build_config(
        given,
        load_config_params(given) if params is None else params,
        env_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        env_experiment_name=env.get("MLFLOW_EXPERIMENT_NAME") or None,
        source_names=source_names,
    )


def prepare(
    given: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    source_names: Mapping[str, str] | None = None,
) -> tuple[GateConfig, Candidate]:
    """Read params.yaml and the input files, check everything; raise InputError before any write."""
    cfg = prepare_config(given, env, source_names=source_names)
    check_output_dir(
        cfg.output_dir, source_names.get("output-dir", "--output-dir") if source_names else "--output-dir"
    )
    if cfg.hf_export_dir is not None:
        check_output_dir(
            cfg.hf_export_dir,
            source_names.get("hf-export-dir", "--hf-export-dir") if source_names else "--hf-export-dir",
        )
    return cfg, load_candidate(cfg)


def check_output_dir(path: Path, name: str) -> None:
    """The folder the results go to must be creatable and writable: found now, not after the run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}: {path} is a file, not a folder; give a folder path")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{name}: {path} lies under the file {parent}; give a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: {parent} is not writable; give a folder you can write to")


# How metrics computed from predictions were measured: the seed's evaluation, reproduced exactly.
PREDICTIONS_IMPLEMENTATION = (
    "deploygate/1: nltk corpus_bleu (no smoothing, weights 1/.5/.33/.25) + rouge_score rougeL precision"
)
PREDICTIONS_TOKENISATION = "bleu: lower+whitespace; rougeL: rouge_score tokenizer + porter stemmer"


def load_predictions(path: Path) -> tuple[ExampleStats, tuple[str, ...]]:
    """Per-example statistics from a predictions file (JSONL or CSV, by its suffix)."""
    from deploygate.core.evaluation import compute_stats, parse_predictions

    suffix = path.suffix.lower()
    fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(suffix)
    if fmt is None:
        raise MetricsError(
            f"predictions: {path} has suffix {suffix or '(none)'!r}; name it .jsonl (one JSON object per line) or .csv"
        )
    text = read_text(path, "predictions", MetricsError)
    parsed = parse_predictions(text, fmt=fmt, source=str(path))  # type: ignore[arg-type]
    if not parsed.pairs:
        raise MetricsError(
            f"predictions: {path} holds no examples; write one prediction/reference pair per line"
        )
    return compute_stats(parsed.pairs), parsed.notes


def load_candidate(cfg: GateConfig) -> Candidate:
    stats = None
    notes: tuple[str, ...] = ()
    also = tuple(g.metric for g in cfg.guardrails or ())
    if cfg.predictions is not None:
        from deploygate.core.evaluation import metrics_from_stats

        stats, notes = load_predictions(cfg.predictions)
        computed = metrics_from_stats(stats)
        if cfg.evaluation_results.exists() and "evaluation-results" in cfg.explicit:
            notes += (f"metrics computed from {cfg.predictions}; {cfg.evaluation_results} not used",)
        metrics = parse_metrics(computed, cfg.weights, scale=1.0, source=str(cfg.predictions), also=also)
        metrics = replace(metrics, notes=(*notes, *metrics.notes))
        signature = signature_for(
            cfg.weights.values,
            1.0,
            implementation=PREDICTIONS_IMPLEMENTATION,
            tokenisation=PREDICTIONS_TOKENISATION,
            smoothing="none",
            references_sha256=stats.references_sha256,
            examples=stats.n,
        )
    else:
        data = read_json(cfg.evaluation_results, "evaluation-results")
        metrics = parse_metrics(
            data, cfg.weights, scale=cfg.metrics_scale, source=str(cfg.evaluation_results), also=also
        )
        signature = signature_for(cfg.weights.values, cfg.metrics_scale)
    source, record = load_model_source(
        cfg.model_artifact_path,
        explicit="model-artifact-path" in cfg.explicit,
        model_uri=cfg.model_uri,
        artifact_path=cfg.source_artifact_path,
    )
    return Candidate(metrics=metrics, source=source, signature=signature, location=record, stats=stats)


def hub_client(env: Mapping[str, str]) -> HubPublisher:
    """The Hub adapter with the token and endpoint of the environment (cheap: nothing is imported
    or requested until it is used)."""
    from deploygate.adapters.hf_hub import HubPublisher

    token = env.get("HF_TOKEN") or env.get("HUGGINGFACE_HUB_TOKEN") or None
    return HubPublisher(token, env.get("HF_ENDPOINT") or None)


def hub_publisher(cfg: GateConfig, env: Mapping[str, str]) -> HubPublisher | None:
    """The Hub adapter for a rollback, or None when nothing goes to the Hub."""
    if cfg.skip_hf_push or not cfg.hf_model_id:
        return None
    from deploygate.core.hub_names import validate_hf_model_id

    validate_hf_model_id(cfg.hf_model_id)
    return hub_client(env)


def execute_rollback(
    cfg: GateConfig, ctx: RunContext, env: Mapping[str, str], to: str | None
) -> RollbackResult:
    from deploygate.service.rollback import rollback

    registry = MlflowRegistry(cfg.mlflow_tracking_uri)
    registry.check()
    return rollback(cfg, ctx, registry=registry, hub=hub_publisher(cfg, env), to=to, clock=utc_now)


def build_shipper(cfg: GateConfig, env: Mapping[str, str], registry: MlflowRegistry) -> Shipper | None:
    """The Hub stage, when this run pushes to the Hub or exports the Hub folder; else None."""
    pushes = bool(cfg.hf_model_id) and not cfg.skip_hf_push
    if not pushes and cfg.hf_export_dir is None:
        return None
    # the merge and the card library are imported when used; skip runs never get here
    from deploygate.adapters.hf_card import HfCards
    from deploygate.adapters.lora_merge import LoraMerger
    from deploygate.adapters.machine import LocalMachine
    from deploygate.service.ship import HubShipper

    return HubShipper.create(
        cfg,
        registry,
        hub_client(env),
        LoraMerger(),
        HfCards(),
        build_signer(cfg, env),
        shard_bar=shard_bar if _on_terminal() else None,
        machine=LocalMachine(),
    )


def _on_terminal() -> bool:
    import sys

    return sys.stdout.isatty()


def shard_bar(total: int) -> Any:
    """A tqdm bar over the shards of a streamed push (only when stdout is a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="shard", desc="merge + upload")


def pem_or_path(value: str, where: str) -> bytes:
    """A key given as its PEM text (a secret) or as the path of a PEM file."""
    if value.lstrip().startswith("-----BEGIN"):
        from deploygate.core.redact import remember

        if "PRIVATE KEY" in value:
            remember(value)  # a private key's text: never printed or stored, whichever shell got it
        return value.strip().encode() + b"\n"
    path = Path(value).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{where}: {value!r} is neither PEM text nor a readable file ({exc.strerror or exc}); "
            "give the path of the PEM file, or its text from a secret"
        ) from None


def build_signer(cfg: GateConfig, env: Mapping[str, str]) -> Signer | None:
    """The signer `signing` asks for (None when off). Sigstore signs with the workflow's OIDC token,
    which GitHub Actions offers only to jobs granted `id-token: write`."""
    if cfg.signing == "off":
        return None
    from deploygate.adapters.model_signer import KeySigner, SigstoreSigner

    if cfg.signing == "key":
        assert cfg.signing_key is not None
        return KeySigner(pem_or_path(cfg.signing_key, "signing-key"))
    oidc = bool(env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
    return SigstoreSigner(oidc_available=oidc, identity_token=env.get("SIGSTORE_ID_TOKEN") or None)


def build_verifier(
    public_key: str | None, identity: str | None, issuer: str | None, *, names: Mapping[str, str]
) -> SignatureVerifier:
    """A public key, or a Sigstore identity and its issuer: exactly one of the two."""
    from deploygate.adapters.model_signer import KeyVerifier, SigstoreVerifier

    if public_key and (identity or issuer):
        raise ConfigError(
            f"{names['public-key']}: given with {names['identity']}; verify against a public key or a Sigstore "
            "identity, not both"
        )
    if public_key:
        return KeyVerifier(pem_or_path(public_key, names["public-key"]), where=names["public-key"])
    if identity and issuer:
        return SigstoreVerifier(identity, issuer)
    raise ConfigError(
        f"{names['public-key']}: verify needs the signer's public key, or a Sigstore {names['identity']} and "
        f"{names['issuer']} (e.g. https://token.actions.githubusercontent.com); give one"
    )


def execute_verify(
    env: Mapping[str, str],
    verifier: SignatureVerifier,
    *,
    repo_id: str | None,
    revision: str | None,
    local: Path | None,
) -> VerifyResult:
    """Check a Hub revision (downloaded to a temporary folder) or a local folder."""
    from deploygate.service.verify import verify_folder, verify_revision

    if local is not None:
        if not local.is_dir():
            raise ConfigError(f"--local: {local} is not a folder; give the folder of a downloaded model")
        return verify_folder(local, verifier)
    assert repo_id is not None
    from deploygate.core.hub_names import validate_hf_model_id

    validate_hf_model_id(repo_id)
    return verify_revision(hub_client(env), repo_id, revision, verifier)


def utc_now() -> datetime:
    return datetime.now(UTC)


def execute(
    cfg: GateConfig, ctx: RunContext, env: Mapping[str, str], candidate: Candidate | None = None
) -> GateResult:
    """Connect, run the gate once, return what happened (files are written by the pipeline)."""
    cand = candidate if candidate is not None else load_candidate(cfg)
    registry = MlflowRegistry(cfg.mlflow_tracking_uri)
    registry.check()
    shipper = build_shipper(cfg, env, registry)
    return run(cfg, ctx, cand, registry=registry, shipper=shipper, files=ResultFiles(), clock=utc_now)


def quiet_third_party_logs() -> None:
    from deploygate.core.redact import install_log_redaction

    install_log_redaction()  # the SDKs' own log lines name URLs too: no credentials in them either
    for name in ("mlflow", "alembic", "urllib3", "httpx", "huggingface_hub", "filelock", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run at <tracking URI>", credentials in the URI included.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's telemetry client, when it cannot fetch its config (offline, a firewalled runner), turns
    # itself off from a background thread by deleting _MLFLOW_TELEMETRY_SESSION_ID from os.environ; a
    # request iterating os.environ at that moment (requests' proxy lookup) fails with KeyError, and
    # the run with it (seen in this project's suite). A deploy gate needs no telemetry: off unless the
    # user set it. Before `import mlflow` (the registry adapter imports it when it is built).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
