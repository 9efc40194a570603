"""The MLflow adapter: the champion and its score, gate runs, model versions and their promotion.

The only module that imports mlflow. Every MLflow error leaves here as a deploygate error
(RegistryError, or ConfigError/ModelSourceError when the user's settings are at fault) with a
one-line message and a fix. Reads are O(1) requests whatever the history size: the champion is
one alias lookup, its score is in the tags deploygate wrote on its version, and the promotion
history is one tag per promotion on the registered model (one request reads them all, one writes
an entry). Every value is checked against what an MLflow server stores (`Limits`) before it is
sent: SQL backends refuse what sqlite silently keeps.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from deploygate.core.decision import Baseline
from deploygate.core.errors import ConfigError, ModelSourceError, RegistryError, first_line
from deploygate.core.metrics import Weights
from deploygate.core.model import Champion, ModelSource, ResolvedSource
from deploygate.core.promotion import Holder
from deploygate.core.provenance import VersionFacts, VersionIdentity, parse_baseline
from deploygate.core.records import (
    HISTORY_KEEP,
    RUN_SUMMARY_METRICS,
    TAG_BASELINE,
    TAG_CANDIDATE,
    TAG_DECISION,
    TAG_GATE_RUN,
    TAG_GIT_SHA,
    TAG_HISTORY,
    TAG_HUB_COMMIT,
    TAG_METRIC,
    TAG_METRICS,
    TAG_OVERRIDE,
    TAG_REASON,
    TAG_REGISTERED_VERSION,
    TAG_SCORE,
    TAG_SIGNATURE,
    run_page,
    version_page,
)
from deploygate.core.redact import remember, url_password
from deploygate.core.settings import DEFAULT_LOCAL_TRACKING_URI

log = logging.getLogger(__name__)

# Tracking URIs served by MLflow's SQL store, which mlflow-skinny does not have (the `local` extra does).
_DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
# A folder holds a model when it (or a folder right below it, like the seed's `model/peft`) has one of these.
MODEL_MARKERS = ("MLmodel", "adapter_config.json")
_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]{8,64})/?$")


@dataclass(frozen=True)
class Limits:
    """The longest value an MLflow server stores, per kind (characters). Read from the installed
    MLflow's validation (mlflow/utils/validation.py), capped by the SQL columns that servers of this
    and earlier releases have: registered-model tags are VARCHAR(5000) on every release (the
    validation allows 100,000, PostgreSQL and MySQL then refuse), version tags and run tags were
    VARCHAR(5000) before MLflow 2.x / 3.x widened them, descriptions are VARCHAR(5000). sqlite checks
    none of them."""

    run_tag: int = 5000
    param: int = 6000
    model_tag: int = 5000
    version_tag: int = 5000
    description: int = 5000
    key: int = 250
    model_name: int = 256  # the registered_models.name column
    alias: int = 255
    experiment_name: int = 500

    @classmethod
    def of_installed_mlflow(cls) -> Limits:
        from mlflow.utils import validation as v

        column = 5000
        return cls(
            run_tag=min(int(getattr(v, "MAX_TAG_VAL_LENGTH", column)), column),
            param=int(getattr(v, "MAX_PARAM_VAL_LENGTH", 6000)),
            model_tag=min(int(getattr(v, "MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH", column)), column),
            version_tag=min(int(getattr(v, "MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH", column)), column),
            description=column,
            key=min(
                int(getattr(v, "MAX_ENTITY_KEY_LENGTH", 250)),
                int(getattr(v, "MAX_MODEL_REGISTRY_TAG_KEY_LENGTH", 250)),
            ),
            alias=min(int(getattr(v, "MAX_REGISTERED_MODEL_ALIAS_LENGTH", 255)), 256),
            experiment_name=int(getattr(v, "MAX_EXPERIMENT_NAME_LENGTH", 500)),
        )

    def check_names(self, *, registry_name: str, alias: str) -> None:
        """The names every run uses, before the first read that would take a too-long one as absent."""
        for setting, value, limit in (
            ("registry-name", registry_name, self.model_name),
            ("champion-alias", alias, self.alias),
        ):
            if len(value) > limit:
                raise ConfigError(
                    f"{setting}: {len(value):,} characters ({value[:40]!r}...); MLflow keeps at most "
                    f"{limit:,}; choose a shorter one"
                )


def check_fits(what: str, key: str, value: str, limit: int, key_limit: int = 250) -> None:
    """Refuse, before it is sent, a value the server would reject (or sqlite silently keep)."""
    if len(key) > key_limit:
        raise ConfigError(
            f"registry: the {what} key {key[:60]!r}... is {len(key):,} characters; MLflow keeps at "
            f"most {key_limit:,}; shorten the name it comes from"
        )
    if len(value) > limit:
        raise ConfigError(
            f"registry: the {what} {key!r} would be {len(value):,} characters; MLflow keeps at most "
            f"{limit:,}; shorten the input it comes from"
        )


def clip(value: str, limit: int) -> str:
    """A descriptive run tag or param cut to the limit on purpose, saying how much was cut."""
    if len(value) <= limit:
        return value
    note = f" [... cut to fit MLflow: {len(value):,} characters in all]"
    return value[: limit - len(note)] + note


# How each SQL backend words a concurrent insert of the same key (a first alias, a registered model
# created at once by two runs); sqlite also answers "database is locked" under write contention.
_INSERT_CONFLICT = (
    "UNIQUE constraint",
    "UniqueViolation",
    "duplicate key value violates unique constraint",
    "Duplicate entry",
    "IntegrityError",
    "database is locked",
)


def is_insert_conflict(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # the error and what caused it (RegistryError wraps the MLflow exception)
        if seen is None:
            return False
        if any(marker in str(seen) for marker in _INSERT_CONFLICT):
            return True
        seen = seen.__cause__
    return False


def history_key(entry: Mapping[str, Any]) -> str:
    """The tag key of one history entry: sorts by the time of the promotion, unique per run."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(str(entry.get("at"))).astimezone(UTC)
    except ValueError:
        at = datetime.now(UTC)
    marker = "".join(c for c in str(entry.get("run_id") or "") if c.isalnum())[:32] or uuid.uuid4().hex
    return f"{TAG_HISTORY}.{at.strftime('%Y%m%dT%H%M%S.%fZ')}.{marker}"


def history_value(entry: Mapping[str, Any]) -> str:
    return json.dumps(dict(entry), ensure_ascii=False, separators=(",", ":"))


def _is_not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    text = str(exc)
    return (
        code == "RESOURCE_DOES_NOT_EXIST" or "not found" in text.lower() or "does not exist" in text.lower()
    )


class MlflowRegistry:
    """MLflow tracking + model registry, through one MlflowClient bound to one tracking URI."""

    def __init__(self, tracking_uri: str) -> None:
        import mlflow  # deferred: importing mlflow costs ~1 s, a bad-input run should not pay it
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        remember(url_password(tracking_uri))  # a password in the URI: never shown, whatever echoes the URI
        self._mlflow = mlflow
        self._resolved: dict[ModelSource, ResolvedSource] = {}
        scheme = urlparse(tracking_uri).scheme.split("+")[0]
        if scheme in _DATABASE_SCHEMES and importlib.util.find_spec("sqlalchemy") is None:
            raise ConfigError(
                f"mlflow-tracking-uri: {_display(tracking_uri)} is a database store"
                f"{' (the default when MLFLOW_TRACKING_URI is not set)' if tracking_uri == DEFAULT_LOCAL_TRACKING_URI else ''}"
                ", which needs the full mlflow package, and this install has only mlflow-skinny: "
                "pip install 'deploygate[local]', or set MLFLOW_TRACKING_URI to your MLflow server"
            )
        self.limits = Limits.of_installed_mlflow()
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except Exception as exc:  # bad scheme, missing sqlalchemy for sqlite:// ...
            raise ConfigError(
                f"mlflow-tracking-uri: cannot use {tracking_uri!r}: {first_line(exc, 400)}; "
                "give an http(s):// server URL or sqlite:///path/to/mlflow.db"
            ) from exc

    # --- connection ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Turn any MLflow/requests failure inside the block into a one-line RegistryError."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # stage APIs: deprecated, still needed
                yield
        except (RegistryError, ConfigError, ModelSourceError):
            raise
        except Exception as exc:
            raise RegistryError(
                f"MLflow: {what} failed at {self.display_uri}: {first_line(exc, 400)}", hint=_fix_for(exc)
            ) from exc

    @property
    def display_uri(self) -> str:
        return _display(self.tracking_uri)

    def check_registry(self) -> str:
        """The model registry answers a search (doctor's check; a RegistryError names the fix)."""
        with self._call("searching registered models"):
            self.client.search_registered_models(max_results=1)
        return "answers"

    def check(self) -> str:
        """Fail fast and clearly when the server is down or the credentials are refused."""
        parsed = urlparse(self.tracking_uri)
        if parsed.scheme in ("http", "https"):
            import requests

            for attempt in range(3):  # a connection reset or a restarting server is worth two retries
                try:
                    requests.get(self.tracking_uri.rstrip("/") + "/health", timeout=10)
                    break
                except requests.RequestException as exc:
                    if attempt == 2:
                        raise RegistryError(
                            f"MLflow server at {self.display_uri} is unreachable ({type(exc).__name__}, 3 attempts); "
                            "check MLFLOW_TRACKING_URI (or mlflow-tracking-uri) and that the server is running"
                        ) from exc
                    time.sleep(1.0 * 2**attempt)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.client.search_experiments(max_results=1)
        except Exception as exc:
            text = first_line(exc, 400)
            if "401" in text or "403" in text or "Unauthorized" in text or "credentials" in text.lower():
                raise RegistryError(
                    f"MLflow at {self.display_uri} refused the credentials ({text}); set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or DAGSHUB_USERNAME and DAGSHUB_USER_TOKEN)"
                ) from exc
            raise RegistryError(f"MLflow at {self.display_uri} is not usable: {text}") from exc
        return f"MLflow at {self.display_uri}: reachable, credentials accepted"

    # --- links ---------------------------------------------------------------------------------

    def _ui_base(self) -> str | None:
        if urlparse(self.tracking_uri).scheme in ("http", "https"):
            return self.display_uri.rstrip("/")
        return None

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        base = self._ui_base()
        return run_page(base, experiment_id, run_id) if base else None

    def version_url(self, name: str, version: str) -> str | None:
        base = self._ui_base()
        return version_page(base, name, version) if base else None

    # --- the baseline --------------------------------------------------------------------------

    def champion(self, name: str, alias: str, *, by_stage: bool = False) -> Champion | None:
        """The version holding `alias` (or the Production stage, for servers without aliases) and
        the score deploygate recorded on it; None: no champion."""
        self.limits.check_names(registry_name=name, alias=alias)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                if by_stage:
                    latest = self.client.get_latest_versions(name, stages=["Production"])
                    if not latest:
                        return None
                    mv = latest[0]
                else:
                    mv = self.client.get_model_version_by_alias(name, alias)
        except Exception as exc:
            # Only the server's own "no such model / alias" answers mean "no champion". A transport or
            # 5xx error whose text merely mentions the /alias endpoint must fail, never read as a
            # first model (that would deploy anything and move the alias away from the champion).
            code = str(getattr(exc, "error_code", ""))
            if (
                code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
                and "not found" in str(exc).lower()
            ):
                return None
            raise RegistryError(
                f"MLflow: reading alias {alias!r} of model {name!r} failed at {self.display_uri}: {first_line(exc, 400)}"
            ) from exc
        return self._champion_from(mv)

    def version(self, name: str, version: str) -> Champion:
        """One version and what deploygate recorded on it; ConfigError when it does not exist."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                mv = self.client.get_model_version(name, version)
        except Exception as exc:
            if _is_not_found(exc) or "INVALID_PARAMETER_VALUE" in str(getattr(exc, "error_code", "")):
                raise ConfigError(
                    f"--to: version {version!r} of model {name!r} does not exist; pick one listed in the MLflow UI"
                ) from exc
            raise RegistryError(
                f"MLflow: reading {name!r} v{version} failed: {first_line(exc, 400)}"
            ) from exc
        if mv.status != "READY":
            raise ConfigError(f"--to: {name!r} v{version} is {mv.status}, not READY; pick a READY version")
        return self._champion_from(mv)

    def _champion_from(self, mv: Any) -> Champion:
        tags = dict(mv.tags or {})
        metrics = _metrics_from_json(tags.get(TAG_METRICS))
        if metrics is None:  # a version promoted before the JSON tag existed: the per-metric tags
            metrics = {
                k[len(TAG_METRIC) :]: v
                for k, raw in tags.items()
                if k.startswith(TAG_METRIC) and (v := _float_or_none(raw)) is not None
            }
        return Champion(
            version=str(mv.version),
            score=_float_or_none(tags.get(TAG_SCORE)),
            metrics=metrics,
            gate_run_id=tags.get(TAG_GATE_RUN),
            source=mv.source,
            hf_commit=tags.get(TAG_HUB_COMMIT),
            signature=tags.get(TAG_SIGNATURE),
            override=tags.get(TAG_OVERRIDE) in ("forced", "rollback"),
            run_id=mv.run_id or _run_of_source(mv.source),
            tags=tags,
        )

    def champion_baseline(
        self,
        name: str,
        alias: str,
        *,
        by_stage: bool = False,
        weights: Weights | None = None,
        scale: float = 1.0,
    ) -> Baseline | None:
        """The production model to beat and its score; None only when the registry has none.

        The alias holder (or with `by_stage` the Production stage holder). A registry from before
        deploygate (the seed's deployment script promoted to the Production stage, set no alias) is
        adopted: its Production version is the baseline, never "no champion". A score deploygate did
        not record is looked up, in order: its source run's `weighted_score` metric, the score
        recomputed from that run's metrics with `weights`, the `weighted_score` tag the seed's script
        set on the version. None found: ConfigError with the command that records it."""
        champ = self.champion(name, alias, by_stage=by_stage)
        stage_only = False
        if champ is None and not by_stage:
            champ = self.champion(name, alias, by_stage=True)
            stage_only = champ is not None
        if champ is None:
            return None
        held = (
            f"v{champ.version} holds the Production stage and no {alias!r} alias"
            if stage_only
            else f"v{champ.version} holds {'the Production stage' if by_stage else f'alias {alias!r}'}"
        )
        score, metrics, found = champ.score, dict(champ.metrics), None
        if score is None:
            score, run_metrics, found = self._score_elsewhere(champ, weights, scale)
            metrics = metrics or run_metrics
        if score is None:
            raise ConfigError(
                f"registry: model {name!r} {held} but its score cannot be found (no {TAG_SCORE} tag; "
                f"{found}; no weighted_score tag on the version); record it with `deploygate adopt "
                f"--registry-name {name} --version {champ.version} --score S` (S: its weighted score), "
                "or use --baseline best-ever"
            )
        origin = None
        if stage_only or found:
            origin = held + (f", score {found}" if found else f", score from its {TAG_SCORE} tag")
        return Baseline(
            score=score,
            source="champion",
            version=champ.version,
            run_id=champ.gate_run_id,
            metrics=metrics,
            signature=champ.signature,
            origin=origin,
            stage_only=stage_only,
        )

    def _score_elsewhere(
        self, champ: Champion, weights: Weights | None, scale: float
    ) -> tuple[float | None, dict[str, float], str]:
        """(score, metrics, where it came from) for a version deploygate did not score; (None, {},
        what was looked at) when nothing holds it."""
        looked = "no source run"
        run_metrics: dict[str, float] = {}
        if champ.run_id:
            try:
                run = self.client.get_run(champ.run_id)
            except Exception as exc:
                if not _is_not_found(exc):
                    raise RegistryError(
                        f"MLflow: reading run {champ.run_id} failed: {first_line(exc, 400)}"
                    ) from exc
                looked = f"its source run {champ.run_id} does not exist"
            else:
                run_metrics = {str(k): float(v) for k, v in run.data.metrics.items()}
                if (value := _float_or_none(run_metrics.get("weighted_score"))) is not None:
                    return value, run_metrics, f"from its run {champ.run_id}'s weighted_score metric"
                if weights is not None:
                    from deploygate.core.errors import MetricsError
                    from deploygate.core.metrics import parse_metrics, weighted_score

                    try:
                        parsed = parse_metrics(
                            run_metrics, weights, scale=scale, source=f"run {champ.run_id}"
                        )
                    except MetricsError:
                        pass
                    else:
                        return (
                            weighted_score(parsed, weights).score,
                            dict(parsed.values),
                            f"recomputed from its run {champ.run_id}'s metrics with the configured weights",
                        )
                looked = (
                    f"its source run {champ.run_id} has no weighted_score metric nor "
                    f"{', '.join(weights.values) if weights else 'the weighted metrics'}"
                )
        seed_tag = _float_or_none(champ.tags.get("weighted_score"))
        if seed_tag is not None:
            return (
                seed_tag,
                run_metrics,
                "from its weighted_score tag (set by the E-commerce-Chatbot deployment script)",
            )
        return None, {}, looked

    def best_ever_baseline(self, experiment_name: str) -> Baseline | None:
        """The seed's literal rule: the highest weighted score of any finished past gate run that
        deployed. Pull-request verdicts, dry runs, skipped and superseded runs log `deployed` 0,
        rollbacks log no `deployed` at all: none of them counts."""
        with self._call(f"searching experiment {experiment_name!r}"):
            exp = self.client.get_experiment_by_name(experiment_name)
            if exp is None:
                return None
            runs = self.client.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status = 'FINISHED' and metrics.deployed = 1 and metrics.weighted_score >= 0",
                order_by=["metrics.weighted_score DESC", "attributes.start_time DESC"],
                max_results=1,
            )
        if not runs:
            return None
        run = runs[0]
        metrics = _metrics_from_json(run.data.tags.get(TAG_METRICS))
        if metrics is None:
            metrics = {
                k: v
                for k, v in run.data.metrics.items()
                if k not in RUN_SUMMARY_METRICS and not k.startswith("contribution_")
            }
        return Baseline(
            score=float(run.data.metrics["weighted_score"]),
            source="best-ever",
            version=run.data.tags.get(TAG_REGISTERED_VERSION) or None,
            run_id=run.info.run_id,
            metrics=metrics,
            signature=run.data.tags.get(TAG_SIGNATURE),
        )

    def history(self, name: str) -> list[dict[str, Any]]:
        """The promotion history kept on the registered model, oldest first; [] when none. One
        request: the entry tags, after the list the previous release kept in one tag."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = self.client.get_registered_model(name)
        except Exception as exc:
            if _is_not_found(exc):
                return []
            raise RegistryError(f"MLflow: reading model {name!r} failed: {first_line(exc, 400)}") from exc
        tags = dict(model.tags or {})
        entries: list[dict[str, Any]] = []
        raw = tags.get(TAG_HISTORY)
        try:
            legacy = json.loads(raw) if raw else []
        except json.JSONDecodeError:
            log.warning(
                "registered model %s: tag %s is not JSON; that part of the history is ignored",
                name,
                TAG_HISTORY,
            )
            legacy = []
        if isinstance(legacy, list):
            entries.extend(e for e in legacy if isinstance(e, dict))
        for key in sorted(k for k in tags if k.startswith(TAG_HISTORY + ".")):
            try:
                entry = json.loads(tags[key])
            except json.JSONDecodeError:
                log.warning("registered model %s: tag %s is not JSON; ignored", name, key)
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    # --- the source ----------------------------------------------------------------------------

    def resolve_source(self, source: ModelSource) -> ResolvedSource:
        """Where the candidate's files are, checked not to be empty (reads only; ModelSourceError, exit
        2, naming what was found where). MLflow 3 keeps a model logged in a run as a LoggedModel
        (`models:/m-<id>`) and leaves the run's own `artifacts/<path>` empty; MLflow 2 put the files
        there. Registering the empty folder would make a version that holds nothing."""
        cached = self._resolved.get(source)
        if cached is None:
            if source.local_path is not None:
                cached = _resolve_local(source.local_path)
            elif source.model_uri:
                cached = self._resolve_uri(source)
            elif source.run_id:
                cached = self._resolve_run(
                    source.run_id,
                    source.artifact_path.strip("/") or "model",
                    location_uri=source.tracking_uri,
                )
            else:
                raise ModelSourceError("model location: no source to register")
            log.info("candidate model: %s", cached.where)
            self._resolved[source] = cached
        return cached

    def _resolve_uri(self, source: ModelSource) -> ResolvedSource:
        uri = str(source.model_uri)
        if uri.startswith("runs:/"):
            run_id, _, path = uri[len("runs:/") :].partition("/")
            return self._resolve_run(run_id, path.strip("/") or "model", location_uri=source.tracking_uri)
        logged = _LOGGED_MODEL_URI.match(uri)
        if logged:
            model = self._logged_model(logged.group(1), f"model-uri {uri}")
            found = self._marker(lambda p: self._list_logged(model.model_id, p))
            if found is None:
                raise ModelSourceError(
                    f"model-uri: LoggedModel {model.model_id} ({uri}) holds no model: no "
                    f"{' or '.join(MODEL_MARKERS)} among {self._names(lambda p: self._list_logged(model.model_id, p))}; "
                    "give the URI of the model that holds the adapter"
                )
            return ResolvedSource(
                uri,
                source.run_id or model.source_run_id,
                model.model_id,
                where=f"LoggedModel {model.model_id} ({found})",
                fetch_uri=model.artifact_location,
            )
        fetch = self._underlying(uri)
        found = self._marker(lambda p: self._list_uri(fetch, p))
        if found is None:
            raise ModelSourceError(
                f"model-uri: {uri} holds no model: no {' or '.join(MODEL_MARKERS)} among "
                f"{self._names(lambda p: self._list_uri(fetch, p))}; give the URI of the folder that holds the model"
            )
        return ResolvedSource(uri, source.run_id, None, where=f"{uri} ({found})", fetch_uri=fetch)

    def _underlying(self, uri: str) -> str:
        """A registered model URI (models:/name/version, models:/name@alias) as the URI of its files."""
        if not uri.startswith("models:/"):
            return uri
        ref = uri[len("models:/") :].strip("/")
        name, at, alias = ref.partition("@")
        with self._call(f"resolving {uri}"):
            if at:
                version = str(self.client.get_model_version_by_alias(name, alias).version)
            else:
                name, _, version = ref.rpartition("/")
                if not name or not version:
                    raise ModelSourceError(
                        f"model-uri: {uri!r} is not models:/<name>/<version> or models:/<name>@<alias>"
                    )
            return str(self.client.get_model_version_download_uri(name, version))

    def _resolve_run(self, run_id: str, path: str, *, location_uri: str | None) -> ResolvedSource:
        run = self._source_run(run_id, location_uri)
        models = self._logged_models_of(run)
        named = [m for m in models if m.name == path]
        if named:
            steps = {o.model_id: o.step for o in (getattr(run.outputs, "model_outputs", None) or [])}
            model = max(named, key=lambda m: (steps.get(m.model_id, -1), m.creation_timestamp or 0))
            status = str(getattr(model.status, "name", model.status))
            found = self._marker(lambda p: self._list_logged(model.model_id, p))
            if "READY" not in status:
                raise ModelSourceError(
                    f"model location: run {run_id} logged model {path!r} as LoggedModel {model.model_id}, which is "
                    f"{status}, not READY (its upload did not finish); log the model again"
                )
            if found is not None:
                return ResolvedSource(
                    f"models:/{model.model_id}",
                    run_id,
                    model.model_id,
                    where=f"LoggedModel {model.model_id} {path!r} of run {run_id} ({found})",
                    fetch_uri=model.artifact_location,
                )
        artifact_root = f"{run.info.artifact_uri.rstrip('/')}/{path}"
        found = self._marker(lambda p: self._list_uri(artifact_root, p))
        if found is not None:
            return ResolvedSource(
                artifact_root,
                run_id,
                None,
                where=f"run {run_id} artifacts under {path!r} ({found})",
                fetch_uri=artifact_root,
            )
        logged = ", ".join(f"{m.model_id} {m.name!r}" for m in models) or "none"
        raise ModelSourceError(
            f"model location: run {run_id} holds no model under {path!r}: its artifacts under {path!r} are "
            f"{self._names(lambda p: self._list_uri(artifact_root, p))}, its run artifacts are "
            f"{self._names(lambda p: self._list_uri(run.info.artifact_uri, p))}, its LoggedModels: {logged}; "
            f"log the model in that run (mlflow.transformers.log_model(..., name={path!r})) or set "
            "source-artifact-path to where it is"
        )

    def _source_run(self, run_id: str, location_uri: str | None) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return self.client.get_run(run_id)
        except Exception as exc:
            if not _is_not_found(exc) and "INVALID_PARAMETER_VALUE" not in str(
                getattr(exc, "error_code", "")
            ):
                raise RegistryError(f"MLflow: reading run {run_id} failed: {first_line(exc, 400)}") from exc
            elsewhere = location_uri and not _same_server(location_uri, self.tracking_uri)
            if elsewhere and _run_exists_at(str(location_uri), run_id):
                raise ModelSourceError(
                    f"model location: run {run_id} is on {_display(str(location_uri))} (the location file's "
                    f"tracking_uri), not on the gate's MLflow {self.display_uri}; the gate registers models on its "
                    f"own server only: run it with MLFLOW_TRACKING_URI={_display(str(location_uri))}, or give the "
                    "model as local_path or model_uri"
                ) from exc
            also = (
                f" (the location file's tracking_uri {_display(str(location_uri))} does not have it either)"
                if elsewhere
                else ""
            )
            raise ModelSourceError(
                f"model location: mlflow_run_id {run_id!r} is not a run on {self.display_uri}{also}; "
                "point MLFLOW_TRACKING_URI at the server the model was logged to, or fix the run id"
            ) from exc

    def _logged_models_of(self, run: Any) -> list[Any]:
        """The LoggedModels linked to a run (its outputs, else those naming it as source run); [] on
        servers without LoggedModels (MLflow 2, older hosted servers)."""
        ids = [o.model_id for o in (getattr(run.outputs, "model_outputs", None) or [])]
        models = []
        for model_id in dict.fromkeys(ids):
            with contextlib.suppress(Exception):
                models.append(self.client.get_logged_model(model_id))
        if models:
            return models
        try:
            found = self.client.search_logged_models(
                [run.info.experiment_id],
                filter_string=f"source_run_id = '{_run_id_literal(run.info.run_id)}'",
                max_results=50,
            )
        except Exception as exc:  # no LoggedModel API on this server: the MLflow 2 layout is all there is
            log.debug("searching LoggedModels of run %s: %s", run.info.run_id, first_line(exc, 400))
            return []
        return [m for m in found if m.source_run_id == run.info.run_id]

    def _logged_model(self, model_id: str, what: str) -> Any:
        try:
            return self.client.get_logged_model(model_id)
        except Exception as exc:
            if _is_not_found(exc):
                raise ModelSourceError(
                    f"{what}: no LoggedModel {model_id} on {self.display_uri}; check the id"
                ) from exc
            raise RegistryError(
                f"MLflow: reading LoggedModel {model_id} failed: {first_line(exc, 400)}"
            ) from exc

    def _list_logged(self, model_id: str, path: str) -> list[tuple[str, bool]]:
        with self._call(f"listing LoggedModel {model_id}"):
            infos = self.client.list_logged_model_artifacts(model_id, path or None)
        return [(PurePosixPath(i.path).name, bool(i.is_dir)) for i in infos]

    def _list_uri(self, uri: str, path: str) -> list[tuple[str, bool]]:
        from mlflow.artifacts import list_artifacts

        target = f"{uri.rstrip('/')}/{path}" if path else uri
        try:
            infos = list_artifacts(artifact_uri=target, tracking_uri=self.tracking_uri)
        except Exception as exc:
            if _is_not_found(exc) or "No such file" in str(exc):
                return []
            raise RegistryError(
                f"MLflow: listing {target} failed at {self.display_uri}: {first_line(exc, 400)}"
            ) from exc
        return [(PurePosixPath(i.path).name, bool(i.is_dir)) for i in infos or []]

    @staticmethod
    def _marker(listing: Callable[[str], list[tuple[str, bool]]]) -> str | None:
        """'MLmodel' / 'peft/adapter_config.json' when the folder (or a folder right below) holds a model."""
        top = listing("")
        for name in MODEL_MARKERS:
            if any(n == name and not d for n, d in top):
                return name
        for sub in [n for n, d in top if d][:20]:
            below = listing(sub)
            for name in MODEL_MARKERS:
                if any(n == name and not d for n, d in below):
                    return f"{sub}/{name}"
        return None

    @staticmethod
    def _names(listing: Callable[[str], list[tuple[str, bool]]]) -> str:
        names = [n + ("/" if d else "") for n, d in listing("")]
        if not names:
            return "empty"
        return "[" + ", ".join(sorted(names)[:12]) + (", ..." if len(names) > 12 else "") + "]"

    def download(self, source: ModelSource, dst: Path) -> Path:
        """Fetch the candidate's files from where `resolve_source` found them (the source the version
        records), and the source run's `tokenizer` folder (the seed logs it beside the model), into
        `dst`. Returns the folder holding the model."""
        from mlflow.artifacts import download_artifacts

        resolved = self.resolve_source(source)
        if resolved.uri is None:
            assert source.local_path is not None
            return source.local_path
        dst.mkdir(parents=True, exist_ok=True)
        with self._call(f"downloading the candidate {resolved.uri}"):
            model = Path(
                download_artifacts(
                    artifact_uri=resolved.fetch_uri or resolved.uri,
                    dst_path=str(dst / "model"),
                    tracking_uri=self.tracking_uri,
                )
            )
            if resolved.run_id:
                with contextlib.suppress(Exception):  # the tokenizer is optional beside the model
                    download_artifacts(
                        run_id=resolved.run_id,
                        artifact_path="tokenizer",
                        dst_path=str(dst),
                        tracking_uri=self.tracking_uri,
                    )
            return model

    # --- gate runs -----------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        if len(name) > self.limits.experiment_name:
            raise ConfigError(
                f"experiment-name: {len(name):,} characters ({name[:40]!r}...); MLflow keeps at most "
                f"{self.limits.experiment_name:,}; choose a shorter one"
            )
        with self._call(f"opening experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise ConfigError(
                        f"experiment-name: experiment {name!r} is deleted on {self.display_uri}; "
                        "restore it in the MLflow UI or choose another name"
                    )
                return str(exp.experiment_id)
            try:
                return str(
                    self.client.create_experiment(name, artifact_location=self._local_artifact_location(name))
                )
            except Exception:
                exp = self.client.get_experiment_by_name(name)  # created meanwhile by a parallel run
                if exp is None:
                    raise
                return str(exp.experiment_id)

    def _local_artifact_location(self, experiment: str) -> str | None:
        """For a local sqlite store, keep artifacts beside the database, not in ./mlruns of the cwd."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        db = Path(self.tracking_uri[len("sqlite:///") :])
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
        return (db.resolve().parent / "mlartifacts" / slug).as_uri()

    def _run_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """Run tags are descriptive copies (the decision, reason, error...): cut to fit, on purpose."""
        for key in tags:
            check_fits("run tag", key, "", self.limits.run_tag, self.limits.key)
        return {k: clip(str(v), self.limits.run_tag) for k, v in tags.items()}

    def start_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        tags = self._run_tags(tags)
        with self._call("starting the gate run"):
            run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
            return str(run.info.run_id)

    def log_run(
        self,
        run_id: str,
        *,
        params: Mapping[str, str],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        for key in (*params, *metrics):
            check_fits("run param or metric", key, "", self.limits.param, self.limits.key)
        with self._call("recording the gate run"):
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k, clip(str(v), self.limits.param)) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in self._run_tags(tags).items()],
            )

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with self._call("tagging the gate run"):
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in self._run_tags(tags).items()])

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        with self._call(f"uploading {folder.name} to the gate run"):
            self.client.log_artifacts(run_id, str(folder), artifact_path)

    def read_artifact(self, run_id: str, path: str, *, attempts: int = 3, backoff: float = 0.5) -> str | None:
        """A small text artifact of a run, or None when the server says the run does not exist or
        lists no such file. Any other failure (a 5xx, a dropped connection, a download that breaks
        off) is retried, then a RegistryError: a failed read is never "absent" (the caller would
        take it as "no statistics" and decide without them)."""
        import tempfile

        folder = path.rsplit("/", 1)[0] if "/" in path else None
        last: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                try:
                    self.client.get_run(run_id)
                except Exception as exc:
                    if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
                        return None
                    raise
                if not any(
                    f.path == path and not f.is_dir for f in self.client.list_artifacts(run_id, folder)
                ):
                    return None
                with tempfile.TemporaryDirectory(prefix="deploygate-artifact-") as tmp:
                    local = self.client.download_artifacts(run_id, path, tmp)
                    return Path(local).read_text(encoding="utf-8")
            except Exception as exc:
                last = exc
                log.info(
                    "reading %s of run %s failed (%s); %s",
                    path,
                    run_id,
                    first_line(exc, 400),
                    "trying again" if attempt + 1 < attempts else "giving up",
                )
        assert last is not None
        raise RegistryError(
            f"MLflow: reading {path} of run {run_id} failed {attempts} times at {self.display_uri}: "
            f"{first_line(last, 400)}",
            hint=_fix_for(last),
        ) from last

    def artifact_uri(self, run_id: str) -> str:
        with self._call("reading the gate run"):
            return str(self.client.get_run(run_id).info.artifact_uri)

    def end_run(self, run_id: str, status: str) -> None:
        with self._call("closing the gate run"):
            self.client.set_terminated(run_id, status)

    # --- versions and promotion ----------------------------------------------------------------

    def _server_name(self) -> str:
        """The tracking server as a Hub repo may show it: a server's URL (no credentials), but only the
        kind of a local store or database (its path or host is nobody's business on a public repo)."""
        scheme = urlparse(self.tracking_uri).scheme
        return (
            self.display_uri
            if scheme in ("http", "https")
            else f"a local {scheme.split('+')[0] or 'file'} store"
        )

    def version_facts(self, name: str, version: str) -> VersionFacts:
        """What MLflow recorded for one version: the identity its Hub tag is made for and what its
        model card states (score, metrics, weights, decision, the champion it beat, its gate run and
        creation time). Two reads: the version, and the gate run that registered it (for its link)."""
        from deploygate.core.signature import MetricSignature

        with self._call(f"reading {name!r} v{version}"):
            mv = self.client.get_model_version(name, version)
        tags = dict(mv.tags or {})
        gate_run = tags.get(TAG_GATE_RUN)
        run_url = None
        if gate_run:
            try:
                with self._call(f"reading gate run {gate_run}"):
                    run_url = self.run_url(str(self.client.get_run(gate_run).info.experiment_id), gate_run)
            except RegistryError as exc:  # a deleted run: the card says "not recorded"
                log.info("gate run %s of %s v%s cannot be read (%s)", gate_run, name, version, exc.message)
        signature = MetricSignature.from_json(tags[TAG_SIGNATURE]) if tags.get(TAG_SIGNATURE) else None
        recorded, baseline = parse_baseline(tags.get(TAG_BASELINE))
        created = getattr(mv, "creation_timestamp", None)
        return VersionFacts(
            identity=VersionIdentity(
                registry_name=name,
                version=str(mv.version),
                created_ms=int(created) if isinstance(created, int | float) else None,
                candidate_key=tags.get(TAG_CANDIDATE),
                gate_run_id=gate_run,
                tracking_server=self._server_name(),
            ),
            hub_commit=tags.get(TAG_HUB_COMMIT),
            score=_float_or_none(tags.get(TAG_SCORE)),
            metrics=_metrics_from_json(tags.get(TAG_METRICS)),
            weights=dict(signature.weights) if signature else None,
            verdict=tags.get(TAG_DECISION),
            reason=tags.get(TAG_REASON),
            baseline=baseline,
            baseline_recorded=recorded,
            git_sha=tags.get(TAG_GIT_SHA),
            gate_run_url=run_url,
            version_url=self.version_url(name, str(mv.version)),
        )

    def find_version(self, name: str, candidate_key: str) -> str | None:
        """The version already registered for this candidate (a re-run), if any."""
        key_clause = ("tag", TAG_CANDIDATE, candidate_key)
        query = version_filter([("attribute", "name", name), key_clause])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                if query is not None:
                    found = list(self.client.search_model_versions(query, max_results=10))
                else:  # a name no MLflow filter can quote (it holds both ' and "): by key, then by name here
                    by_key = version_filter([key_clause])
                    assert by_key is not None  # the key is hex
                    found, token = [], None
                    while True:
                        page = self.client.search_model_versions(by_key, max_results=1000, page_token=token)
                        found.extend(v for v in page if v.name == name)
                        token = getattr(page, "token", None)
                        if not token:
                            break
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise RegistryError(
                f"MLflow: searching versions of {name!r} failed: {first_line(exc, 400)}"
            ) from exc
        ready = sorted(int(v.version) for v in found if v.status == "READY" and v.name == name)
        return str(ready[0]) if ready else None

    def register(
        self,
        name: str,
        *,
        source_uri: str,
        run_id: str | None,
        tags: Mapping[str, str],
        description: str,
        await_seconds: int = 300,
        model_id: str | None = None,
    ) -> str:
        """Create the registered model if missing, then a version; wait until it is READY. `model_id`
        links the version to the LoggedModel that holds its files (MLflow 3)."""
        for key, value in tags.items():  # read back later: refused rather than cut
            check_fits("version tag", key, value, self.limits.version_tag, self.limits.key)
        description = clip(description, self.limits.description)
        with self._call(f"creating registered model {name!r}"):
            try:
                self.client.create_registered_model(
                    name, description="Promoted by deploygate; the champion alias marks production."
                )
            except Exception as exc:
                # a concurrent run may have created it a moment ago (each database words that its own way)
                if (
                    getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS"
                    and "already exists" not in str(exc)
                    and not is_insert_conflict(exc)
                ):
                    raise
        with self._call(f"creating a version of {name!r} from {source_uri}"):
            mv = self.client.create_model_version(
                name,
                source_uri,
                run_id=run_id,
                tags=dict(tags),
                description=description,
                await_creation_for=await_seconds,
                **({"model_id": model_id} if model_id else {}),
            )
            if mv.status != "READY":
                mv = self.client.get_model_version(name, mv.version)
            if mv.status != "READY":
                raise RegistryError(
                    f"MLflow: version {mv.version} of {name!r} is {mv.status} ({mv.status_message}); "
                    "the registry could not copy the model; check the source artifacts"
                )
            return str(mv.version)

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            check_fits("version tag", key, value, self.limits.version_tag, self.limits.key)
        with self._call(f"tagging {name!r} v{version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version, key, value)

    def holder(self, name: str, alias: str, *, by_stage: bool = False) -> Holder | None:
        """Who holds the champion alias (or Production stage) now, for the promotion protocol."""
        champ = self.champion(name, alias, by_stage=by_stage)
        if champ is None:
            return None
        return Holder(version=champ.version, score=champ.score, override=champ.override)

    def set_champion(self, name: str, version: str, *, alias: str, promotion: str) -> None:
        """Move the alias (and/or the Production stage, archiving the others) to `version`.

        Two runs creating the same alias at once can make the server's insert collide (answered as
        BAD_REQUEST with the database's wording: `UNIQUE constraint` on sqlite, `UniqueViolation` on
        PostgreSQL, `Duplicate entry` on MySQL); the alias exists after that, so setting it again
        succeeds. Such conflicts are retried a few times; anything else is not."""
        for attempt in range(4):
            try:
                with self._call(f"promoting {name!r} v{version}"):
                    if promotion in ("alias", "both"):
                        self.client.set_registered_model_alias(name, alias, version)
                    if promotion in ("stage", "both"):
                        self.client.transition_model_version_stage(
                            name, version, "Production", archive_existing_versions=True
                        )
                return
            except RegistryError as exc:
                if not is_insert_conflict(exc) or attempt == 3:
                    raise
                log.info("promoting %s v%s collided with a concurrent run; trying again", name, version)
                time.sleep(0.2 * (attempt + 1))

    def check_history_entry(self, entry: Mapping[str, Any]) -> None:
        """ConfigError now when `entry` would not fit its tag (before anything is moved)."""
        check_fits(
            "promotion history entry",
            history_key(entry),
            history_value(entry),
            self.limits.model_tag,
            self.limits.key,
        )

    def append_history(self, name: str, entry: Mapping[str, Any]) -> None:
        """Record a promotion: one new tag, so concurrent writers never drop each other's entries and
        the history never outgrows a tag. Entries beyond HISTORY_KEEP are deleted, oldest first
        (housekeeping: a failure there is only logged)."""
        key, value = history_key(entry), history_value(entry)
        check_fits("promotion history entry", key, value, self.limits.model_tag, self.limits.key)
        with self._call(f"recording the promotion history of {name!r}"):
            self.client.set_registered_model_tag(name, key, value)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                keys = sorted(
                    k
                    for k in (self.client.get_registered_model(name).tags or {})
                    if k.startswith(TAG_HISTORY + ".")
                )
                for old in keys[: max(0, len(keys) - HISTORY_KEEP)]:
                    with contextlib.suppress(Exception):  # a concurrent run may have deleted it first
                        self.client.delete_registered_model_tag(name, old)
        except Exception as exc:
            log.info("promotion history of %s: old entries not pruned (%s)", name, first_line(exc, 400))


def _run_of_source(source: str | None) -> str | None:
    """The run id in a `runs:/<id>/...` source (versions registered without run_id, as the seed did)."""
    if source and source.startswith("runs:/"):
        return source[len("runs:/") :].split("/", 1)[0] or None
    return None


def _display(uri: str) -> str:
    """A tracking URI without the credentials it may embed."""
    parsed = urlparse(uri)
    if parsed.password or parsed.username:  # never print credentials embedded in the URI
        host = parsed.hostname or ""
        return parsed._replace(netloc=f"{host}:{parsed.port}" if parsed.port else host).geturl()
    return uri


def _same_server(a: str, b: str) -> bool:
    return _display(a).rstrip("/").lower() == _display(b).rstrip("/").lower()


def _run_exists_at(uri: str, run_id: str) -> bool:
    """Whether `run_id` is a run on the server at `uri`. Only http(s) servers are asked: opening a
    sqlite or file store named in someone else's file could create it here."""
    if urlparse(uri).scheme not in ("http", "https"):
        return False
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except Exception:
        return False
    return True


def _resolve_local(folder: Path) -> ResolvedSource:
    def listing(sub: str) -> list[tuple[str, bool]]:
        root = folder / sub if sub else folder
        return [(p.name, p.is_dir()) for p in root.iterdir()] if root.is_dir() else []

    found = MlflowRegistry._marker(listing)
    if found is None:
        raise ModelSourceError(
            f"model location: local_path {folder} holds no model: no {' or '.join(MODEL_MARKERS)} among "
            f"{MlflowRegistry._names(listing)}; point local_path at the folder save_pretrained (or mlflow) wrote"
        )
    return ResolvedSource(None, None, None, where=f"local folder {folder} ({found})")


def _fix_for(exc: BaseException) -> str | None:
    """What to do about a failed MLflow request, from the status the server answered."""
    text = str(exc)
    code = str(getattr(exc, "error_code", ""))
    status_of = getattr(exc, "get_http_status_code", None)
    status = status_of() if callable(status_of) else None
    if status in (401, 403, 404):
        text += f" error code {status}"
    if "error code 401" in text or code == "UNAUTHENTICATED":
        return (
            "Fix: the server refused the credentials (401): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or DAGSHUB_USERNAME and DAGSHUB_USER_TOKEN)."
        )
    if "error code 403" in text or code == "PERMISSION_DENIED":
        return (
            "Fix: these credentials may not write to this experiment or registered model (403): "
            "grant the user write/manage permission, or use a token that has it."
        )
    if "error code 404" in text or code == "ENDPOINT_NOT_FOUND":
        return (
            "Fix: the server has no such endpoint or resource (404): check that MLFLOW_TRACKING_URI is the "
            "MLflow server's base URL and that the server supports the model registry."
        )
    if ("too many" in text and "error responses" in text) or "Max retries exceeded" in text:
        return (
            "Fix: the server kept failing after MLFLOW_HTTP_REQUEST_MAX_RETRIES retries; re-run the same "
            "command when it is healthy (a registered version and a pushed Hub commit are reused)."
        )
    return None


def _run_id_literal(run_id: str) -> str:
    """A run id inside a quoted filter value: MLflow's ids are hex; anything else is refused, not quoted."""
    if not run_id.replace("-", "").isalnum():
        raise RegistryError(f"MLflow: run id {run_id!r} is not an MLflow run id")
    return run_id


def version_filter(clauses: list[tuple[str, str, str]]) -> str | None:
    """A search_model_versions filter for `type.key = value` clauses, or None when no quoting makes
    MLflow read one back exactly. MLflow's parser (mlflow/utils/search_utils.py, on sqlparse) takes a
    value in '...' or "..." and only strips the outer quotes: there is no escape, so a value is put
    in a quote it does not contain, and the result is parsed back with MLflow's own parser to make
    sure (a trailing backslash, say, would make sqlparse run the string on)."""
    from mlflow.utils.search_utils import SearchModelVersionUtils

    parts = []
    for kind, key, value in clauses:
        quote = "'" if "'" not in value else '"'
        if quote in value:
            return None
        left = key if kind == "attribute" else f"tags.`{key}`"
        parts.append(f"{left} = {quote}{value}{quote}")
    query = " and ".join(parts)
    try:
        parsed = SearchModelVersionUtils.parse_search_filter(query)  # type: ignore[no-untyped-call]
    except Exception:
        return None
    expected = [{"type": kind, "key": key, "comparator": "=", "value": value} for kind, key, value in clauses]
    return query if [dict(p) for p in parsed] == expected else None


def _metrics_from_json(raw: str | None) -> dict[str, float] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): v for k, raw_v in data.items() if (v := _float_or_none(raw_v)) is not None}


def _float_or_none(raw: object) -> float | None:
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
