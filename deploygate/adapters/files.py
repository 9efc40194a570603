"""Reading the user's files: evaluation results, the model location, params.yaml.

The one place that turns a path into parsed values, each failure an InputError that names the
file, what is wrong and the fix. Nothing here writes anything or talks to a server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from deploygate.core import strictjson
from deploygate.core.errors import ConfigError, MetricsError, ModelSourceError, shown
from deploygate.core.model import ModelSource

MAX_INPUT_BYTES = 16 * 1024 * 1024  # an evaluation summary is a few hundred bytes
# A params.yaml is a few hundred values; YAML aliases can make a 400-byte file expand to millions
# (the "billion laughs"). The document's size with every alias expanded is checked before it is built.
MAX_YAML_VALUES = 100_000


def read_text(path: Path, what: str, error: type[Exception]) -> str:
    if not path.exists():
        raise error(f"{what}: {path} does not exist; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise error(f"{what}: {path} is a directory, not a file; give the file's path")
    try:
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise error(
                f"{what}: {path} is over {MAX_INPUT_BYTES >> 20} MiB; give the summary file, not the data"
            )
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{what}: {path} is not UTF-8 text; give a JSON file") from None
    except OSError as exc:
        raise error(f"{what}: {path} cannot be read ({exc.strerror}); check its permissions") from None


def read_json(path: Path, what: str, error: type[Exception] = MetricsError) -> Any:
    text = read_text(path, what, error)
    if not text.strip():
        raise error(f"{what}: {path} is empty; it should hold a JSON object")
    try:
        # NaN / Infinity literals parse to floats; the metric checks refuse them with a clear message.
        return strictjson.loads(text)
    except json.JSONDecodeError as exc:
        raise error(
            f"{what}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the file"
        ) from None
    except (strictjson.DuplicateKeyError, strictjson.NumberTooLongError) as exc:
        raise error(f"{what}: {path}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: {path} is nested too deeply to be evaluation results") from None


def load_params(path: Path, *, explicit: bool) -> dict[str, Any]:
    """params.yaml as a mapping; {} when it is missing and was not asked for by name."""
    if not path.exists() and not explicit:
        return {}
    text = read_text(path, "config", ConfigError)
    try:
        data = _safe_load_bounded(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config: {path} is not valid YAML{where}; fix the file") from None
    except RecursionError:
        raise ConfigError(f"config: {path} is nested too deeply") from None
    except ConfigError:
        raise
    except ValueError as exc:  # a value YAML matches but cannot build, e.g. the date 2001-02-30
        raise ConfigError(
            f"config: {path} holds a value YAML cannot read ({shown(str(exc))}); fix the file"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: {path} holds a YAML {type(data).__name__}, not a mapping with a deployment: section"
        )
    for section in ("deployment", "mlflow"):
        if section in data and data[section] is not None and not isinstance(data[section], dict):
            raise ConfigError(
                f"config: {path} section {shown(section)} is a {type(data[section]).__name__}, not a mapping"
            )
    return data


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]  # (no stubs for yaml)
    """yaml.SafeLoader that refuses integers Python cannot convert (over 4,300 digits), naming the line."""

    path: Path = Path("params.yaml")

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        limit = sys.get_int_max_str_digits()
        digits = sum(c.isdigit() for c in str(node.value))
        if limit and digits > limit:
            raise ConfigError(
                f"config: {self.path} line {node.start_mark.line + 1} holds an integer of {digits} digits, too long "
                "to be a number; write a real value"
            )
        return int(super().construct_yaml_int(node))


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _expanded_size(root: yaml.Node, path: Path) -> int:
    """How many values the document holds with every alias expanded (a shared node counts once per
    reference; each node is visited once). ConfigError when aliases take it past MAX_YAML_VALUES, or
    for an alias that contains itself. Iterative: deep nesting cannot overflow the stack here."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    aliased = False
    first_over: yaml.Node | None = None

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children(node))
            if first_over is None and sizes[key] > MAX_YAML_VALUES:
                first_over = node
            continue
        if key in sizes:
            aliased = True
            continue
        if key in on_path:
            raise ConfigError(
                f"config: {path} line {node.start_mark.line + 1} holds a YAML alias that contains "
                "itself; write the value out"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children(node))  # one already counted: an alias
    if aliased and first_over is not None:
        raise ConfigError(
            f"config: {path} expands to more than {MAX_YAML_VALUES} values through YAML aliases "
            f"(line {first_over.start_mark.line + 1}); write the values out instead of repeating aliases"
        )
    return sizes[id(root)]


def _safe_load_bounded(text: str, path: Path) -> Any:
    """yaml.safe_load, with the expanded size checked on the composed nodes before any value is built."""
    loader = _BoundedLoader(text)
    loader.path = path
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_model_source(
    path: Path,
    *,
    explicit: bool,
    model_uri: str | None,
    artifact_path: str,
) -> tuple[ModelSource | None, dict[str, Any]]:
    """The candidate's source from the model location file (or `model-uri`); (None, {}) if none given.

    Returns the source and the whole location record (model_name, dvc_stage, ... for the report).
    """
    record: dict[str, Any] = {}
    if path.exists() or explicit:
        data = read_json(path, "model-artifact-path", ModelSourceError)
        if not isinstance(data, dict):
            raise ModelSourceError(
                f"model-artifact-path: {path} holds a JSON {type(data).__name__}, not an object; "
                'write {"mlflow_run_id": "...", "tracking_uri": "..."}'
            )
        record = data
    if model_uri:
        if "://" not in model_uri and not model_uri.startswith(("runs:/", "models:/")):
            raise ModelSourceError(
                f"model-uri: {shown(model_uri)} is not an MLflow model URI; use runs:/<run id>/<path> or models:/<name>/<version>"
            )
        return ModelSource(model_uri=model_uri, artifact_path=artifact_path), record
    if not record:
        return None, record

    return _source_of(record, path, artifact_path), record


def _source_of(record: dict[str, Any], path: Path, artifact_path: str) -> ModelSource:
    """The model source a location record names: a model URI, a run (+ artifact path) or a folder."""
    run_id = record.get("mlflow_run_id")
    uri = record.get("model_uri")
    # the server the run was logged to (the seed writes it): read when the run is not on the gate's server
    logged_at = record.get("tracking_uri") if isinstance(record.get("tracking_uri"), str) else None
    local = record.get("local_path")
    art = record.get("artifact_path", artifact_path)
    for key, value in (
        ("mlflow_run_id", run_id),
        ("model_uri", uri),
        ("local_path", local),
        ("artifact_path", art),
    ):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ModelSourceError(
                f"model-artifact-path: {path} key {shown(key)} is {shown(value)}; it must be a non-empty string"
            )
        if isinstance(value, str) and "\x00" in value:
            raise ModelSourceError(
                f"model-artifact-path: {path} key {shown(key)} is {shown(value)}; it contains a NUL byte"
            )
    if run_id is not None and not all(c.isalnum() or c in "-_" for c in run_id):
        raise ModelSourceError(
            f"model-artifact-path: {path} mlflow_run_id {shown(run_id)} is not an MLflow run id"
        )
    if uri:
        return ModelSource(model_uri=uri, run_id=run_id, artifact_path=art, tracking_uri=logged_at)
    if run_id:
        return ModelSource(run_id=run_id, artifact_path=art.strip("/"), tracking_uri=logged_at)
    if local:
        local_path = Path(local)
        if not local_path.is_absolute():
            local_path = (path.parent / local_path).resolve()
        if not local_path.is_dir():
            raise ModelSourceError(
                f"model-artifact-path: {path} local_path {shown(local)} is not a directory; point it at the saved model folder"
            )
        return ModelSource(local_path=local_path, artifact_path=art)
    keys = (
        ", ".join(k if k.isprintable() and len(k) <= 40 else shown(k) for k in sorted(record)[:12]) or "none"
    )
    raise ModelSourceError(
        f"model-artifact-path: {path} names no model source (keys: {keys}); "
        "add mlflow_run_id, model_uri or local_path"
    )
