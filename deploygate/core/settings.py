"""Every setting deploygate takes, in one table, and the frozen config built from them.

The table (`SETTINGS`) is the single source for the CLI flags, the action inputs, params.yaml
keys and the README tables; tests/unit/test_docs.py and tests/action/test_action_yml.py keep them in step. Precedence:
flag / action input > params.yaml > default. Connection settings (tracking URI, tokens) come from
the environment as in the seed, which the shells pass in; this module reads no env and no files.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploygate.core.decision import Guardrail
from deploygate.core.errors import ConfigError, shown
from deploygate.core.metrics import Weights, canonical_name, parse_scale, resolve_weights
from deploygate.core.shard_plan import MIN_SHARD_BYTES, parse_size

Kind = Literal["path", "str", "bool", "float", "int", "size", "choice", "weights", "list", "guardrails"]

# MLflow's own alias rules (mlflow/utils/validation.py), checked here so that a bad alias is refused
# before anything is registered: [\w-], at most 255 characters, not `latest`, and not a version alias
# `v<digits>` (Python's \d: any Unicode digit, so `v٣` is reserved too).
_MLFLOW_ALIAS = re.compile(r"[\w\-]{1,255}")
_MLFLOW_VERSION_ALIAS = re.compile(r"[vV]\d+")

TRUE_WORDS = frozenset({"true", "yes", "on", "1", "y"})
FALSE_WORDS = frozenset({"false", "no", "off", "0", "n"})


@dataclass(frozen=True)
class Setting:
    name: str  # kebab-case: `--name` on the CLI, `name` as an action input
    kind: Kind
    default: Any
    help: str
    params: tuple[tuple[str, ...], ...] = ()  # params.yaml paths, first found wins
    choices: tuple[str, ...] = ()

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


def _s(
    name: str, kind: Kind, default: Any, help: str, *params: str, choices: tuple[str, ...] = ()
) -> Setting:
    return Setting(name, kind, default, help, tuple(tuple(p.split(".")) for p in params), choices)


SETTINGS: tuple[Setting, ...] = (
    _s(
        "evaluation-results",
        "path",
        "results/evaluations/metrics.json",
        "Evaluation results: a flat JSON object of metrics on a 0-1 scale (bleu1..bleu4, rougeL_precision, ...).",
    ),
    _s(
        "model-artifact-path",
        "path",
        "results/fine_tuned_model_location.json",
        "Model location JSON: mlflow_run_id (+ artifact_path), model_uri, or local_path of the candidate.",
    ),
    _s(
        "config",
        "path",
        "params.yaml",
        "params.yaml with a `deployment:` section (and `mlflow:`); optional when left at the default.",
    ),
    _s(
        "output-dir",
        "path",
        "results/deployment",
        "Where deployment_info.json, model_comparison.json and deployment_logs.txt are written.",
    ),
    _s(
        "min-improvement-threshold",
        "float",
        0.001,
        "Minimum absolute gain in weighted score over the champion needed to deploy.",
        "deployment.min_improvement_threshold",
    ),
    _s(
        "predictions",
        "path",
        None,
        "Per-example predictions (JSONL with prediction/reference, or CSV): metrics are computed from them "
        "exactly as the E-commerce-Chatbot evaluation did (nltk BLEU, rouge_score ROUGE-L), and enable the "
        "significance test.",
        "deployment.predictions",
    ),
    _s(
        "weights",
        "weights",
        None,
        "Metric weights, e.g. 'bleu1=0.1,bleu2=0.15,bleu3=0.25,bleu4=0.4,rougeL_precision=0.1'; normalised to sum to 1.",
        "deployment.weighted_scoring.weights",
    ),
    _s(
        "metrics-scale",
        "choice",
        "1",
        "Scale of the evaluation results: 1 (values 0-1) or 100 (percentages).",
        "deployment.metrics_scale",
        choices=("1", "100"),
    ),
    _s(
        "guardrails",
        "guardrails",
        None,
        "Per-metric limits that block a deploy, e.g. 'rougeL_precision.max_drop=0.01,bleu4.min=0.1'.",
        "deployment.guardrails",
    ),
    _s(
        "confidence",
        "float",
        0.95,
        "Confidence for the paired bootstrap: deploy only if the gain clears the threshold at this level.",
        "deployment.significance.confidence",
    ),
    _s(
        "bootstrap-resamples",
        "int",
        1000,
        "Paired bootstrap resamples (seeded; 0 turns the significance test off).",
        "deployment.significance.resamples",
    ),
    _s(
        "allow-incomparable",
        "bool",
        False,
        "Decide even when candidate and champion were scored differently (reported as such).",
        "deployment.allow_incomparable",
    ),
    _s(
        "registry-name",
        "str",
        "deploygate-model",
        "Registered model name in the MLflow Model Registry.",
        "deployment.model_registry_name",
    ),
    _s(
        "experiment-name",
        "str",
        "deploygate",
        "MLflow experiment that records every gate run.",
        "deployment.experiment_name",
        "mlflow.experiment_name",
    ),
    _s(
        "champion-alias",
        "str",
        "champion",
        "Registry alias that marks the production model.",
        "deployment.champion_alias",
    ),
    _s(
        "baseline",
        "choice",
        "champion",
        "What to beat: 'champion' (the alias holder's recorded score) or 'best-ever' (the best past gate run).",
        "deployment.baseline",
        choices=("champion", "best-ever"),
    ),
    _s(
        "promotion",
        "choice",
        "alias",
        "How to promote: 'alias' (MLflow 3), 'stage' (Production stage, for older servers) or 'both'.",
        "deployment.promotion",
        choices=("alias", "stage", "both"),
    ),
    _s(
        "mlflow-tracking-uri",
        "str",
        None,
        "MLflow tracking URI; else MLFLOW_TRACKING_URI, else params.yaml mlflow.tracking_uri, else a local sqlite store.",
        "mlflow.tracking_uri",
    ),
    _s(
        "model-uri",
        "str",
        None,
        "Register this MLflow model URI (runs:/..., models:/..., mlflow-artifacts:/...) instead of the model location file.",
        "deployment.model_uri",
    ),
    _s(
        "source-artifact-path",
        "str",
        "model",
        "Artifact path of the model inside the candidate's MLflow run (the E-commerce-Chatbot training logs it "
        "under 'model').",
        "deployment.source_artifact_path",
    ),
    _s("force-deploy", "bool", False, "Deploy whatever the scores say (recorded as forced)."),
    _s(
        "dry-run",
        "bool",
        False,
        "Decide and report only: nothing is registered or pushed (the gate run is still recorded).",
    ),
    _s(
        "fail-on-reject",
        "bool",
        False,
        "Exit 3 when the gate decides not to deploy (a red step instead of a green one).",
    ),
    _s(
        "skip-hf-push",
        "bool",
        False,
        "Do not build or push anything to the Hugging Face Hub (params.yaml deployment.huggingface.push_to_hub: "
        "false does the same).",
    ),
    _s(
        "hf-model-id",
        "str",
        None,
        "Hugging Face Hub repo id (owner/name) to push the merged model to.",
        "deployment.huggingface.model_id",
    ),
    _s("hf-private", "bool", False, "Create the Hub repo as private.", "deployment.huggingface.private"),
    _s(
        "create-model-card",
        "bool",
        True,
        "Render and push a model card (README.md).",
        "deployment.huggingface.create_model_card",
    ),
    _s(
        "merge",
        "bool",
        True,
        "Merge the LoRA adapter into the base model; false pushes the adapter alone.",
        "deployment.huggingface.merge",
    ),
    _s(
        "base-model",
        "str",
        None,
        "Base model (local path or Hub id); default: the adapter's base_model_name_or_path.",
        "deployment.huggingface.base_model",
    ),
    _s(
        "card-template",
        "path",
        None,
        "A Jinja2 model card template to use instead of the packaged one.",
        "deployment.huggingface.template",
    ),
    _s(
        "hf-export-dir",
        "path",
        None,
        "Also write the exact folder that is (or would be) pushed to the Hub here, for inspection.",
    ),
    _s(
        "max-shard-size",
        "size",
        "2GB",
        "Largest safetensors shard of the merged model (e.g. 500MB, 2GB, 5GB), whatever the base's shards; "
        "a Hub push streams shard by shard, so the disk it needs is about two shards.",
        "deployment.huggingface.max_shard_size",
    ),
    _s(
        "hf-license",
        "str",
        "apache-2.0",
        "License in the model card metadata.",
        "deployment.huggingface.license",
    ),
    _s(
        "hf-language",
        "list",
        ("en",),
        "Languages in the model card metadata (comma-separated).",
        "deployment.huggingface.language",
    ),
    _s(
        "hf-tags",
        "list",
        (),
        "Extra tags in the model card metadata (comma-separated).",
        "deployment.huggingface.tags",
    ),
    _s(
        "signing",
        "choice",
        "off",
        "Sign the Hub folder (model.sig, with the verdict deploygate-verdict.json among the signed files): "
        "'key' with signing-key, 'sigstore' keyless with the workflow's OIDC identity (needs `id-token: write`), "
        "or 'off'. See docs/signing.md.",
        "deployment.signing",
        choices=("off", "key", "sigstore"),
    ),
    _s(
        "signing-key",
        "str",
        None,
        "With signing: key, the EC private key (PEM): a file path, or the PEM text itself from a secret "
        "(masked). Given alone, it turns signing: key on.",
    ),
)
SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


# --- parsing one value ------------------------------------------------------------------------------


def parse_bool(raw: object, where: str) -> bool:
    """YAML 1.2 / GitHub spellings: true/false, yes/no, on/off, 1/0 (any case)."""
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{where}: {shown(raw)} is not a boolean; use true or false")


def parse_shard_size(raw: object, where: str) -> int:
    """A shard size: '2GB', '500MB', '1.5GiB' or a number of bytes."""
    size = None if isinstance(raw, bool) else parse_size(str(raw))
    if size is None or size < MIN_SHARD_BYTES:
        raise ConfigError(f"{where}: {shown(raw)} is not a shard size; give a size such as 500MB, 2GB or 5GB")
    return size


def parse_float(raw: object, where: str, *, minimum: float = 0.0) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{where}: {shown(raw)} is not a number; give a number such as 0.001")
    try:
        value = float(str(raw).strip()) if isinstance(raw, str) else float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {shown(raw)} is not a number; give a number such as 0.001") from None
    except OverflowError:  # an integer of hundreds of digits
        raise ConfigError(
            f"{where}: {shown(raw)} is too large to be a number; give a number such as 0.001"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {shown(raw)} is not finite; give a number such as 0.001")
    if value < minimum:
        raise ConfigError(f"{where}: {value:g} is negative; give a number >= {minimum:g} such as 0.001")
    return value


def parse_weights_text(raw: str, where: str) -> dict[str, object]:
    """`bleu1=0.1,bleu4=0.4` (or `:`) -> {name: value}; values stay text until resolve_weights."""
    out: dict[str, object] = {}
    for part in (p.strip() for p in raw.replace("\n", ",").split(",")):
        if not part:
            continue
        sep = "=" if "=" in part else ":" if ":" in part else None
        if sep is None:
            raise ConfigError(
                f"{where}: {shown(part)} is not name=weight; write e.g. 'bleu4=0.4,rougeL_precision=0.1'"
            )
        name, _, value = part.partition(sep)
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"{where}: weight {shown(value.strip())} of {shown(name.strip())} is not a number"
            ) from None
    if not out:
        raise ConfigError(f"{where}: no weights given; write e.g. 'bleu4=0.4,rougeL_precision=0.1'")
    return out


def parse_guardrails(raw: object, where: str) -> tuple[Guardrail, ...]:
    """`metric.min=0.1,metric.max_drop=0.01` or {metric: {min: .., max_drop: ..}} -> Guardrails."""
    limits: dict[str, dict[str, float]] = {}
    if isinstance(raw, str):
        for part in (p.strip() for p in raw.replace(";", ",").split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            metric, dot, kind = key.strip().rpartition(".")
            if not sep or not dot or not metric:
                raise ConfigError(f"{where}: {shown(part)} is not metric.min=N or metric.max_drop=N")
            limits.setdefault(metric, {})[kind] = value  # type: ignore[assignment]
    elif isinstance(raw, Mapping):
        for metric, spec in raw.items():
            if not isinstance(spec, Mapping):
                raise ConfigError(
                    f"{where}.{metric}: {shown(spec)} is not a mapping like {{min: 0.1, max_drop: 0.01}}"
                )
            limits[str(metric)] = dict(spec)
    else:
        raise ConfigError(
            f"{where}: {shown(raw)} is not a guardrail list; write 'rougeL_precision.max_drop=0.01'"
        )
    out = []
    for metric, spec in limits.items():
        unknown = set(spec) - {"min", "max_drop"}
        if unknown:
            raise ConfigError(
                f"{where}: {metric}.{sorted(unknown)[0]} is not a guardrail; use min or max_drop"
            )
        values = {k: parse_float(v, f"{where} {metric}.{k}") for k, v in spec.items()}
        out.append(Guardrail(canonical_name(metric), min=values.get("min"), max_drop=values.get("max_drop")))
    return tuple(out)


def parse_value(setting: Setting, raw: object, where: str) -> Any:  # noqa: C901 - one parser per setting kind (the settings table's `kind` column)
    """Turn a flag / input / params.yaml value into the setting's type, or raise ConfigError."""
    if raw is None:
        return None
    if setting.kind == "bool":
        return parse_bool(raw, where)
    if setting.kind == "float":
        value = parse_float(raw, where)
        if setting.name == "confidence" and not 0.5 <= value < 1:
            raise ConfigError(
                f"{where}: {value:g} is not a confidence level; give a number from 0.5 to 0.999 such as 0.95"
            )
        return value
    if setting.kind == "int":
        number = parse_float(raw, where)
        if number != int(number) or number > 1_000_000:
            raise ConfigError(f"{where}: {shown(raw)} is not a whole number up to 1000000")
        return int(number)
    if setting.kind == "guardrails":
        return parse_guardrails(raw, where)
    if setting.kind == "size":
        return parse_shard_size(raw, where)
    if setting.kind == "weights":
        return parse_weights_text(raw, where) if isinstance(raw, str) else raw
    if setting.kind == "list":
        if isinstance(raw, str):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ConfigError(f"{where}: {shown(raw)} is not a list of names; write e.g. 'en,fr'")
    if isinstance(raw, dict | list):
        raise ConfigError(f"{where}: {shown(raw)} is not a single value")
    text = str(raw).strip()
    if "\x00" in text:
        raise ConfigError(f"{where}: {shown(text)} contains a NUL byte")
    if setting.kind == "choice":
        if setting.name == "metrics-scale":
            return str(int(parse_scale(text, source=where)))
        if text not in setting.choices:
            raise ConfigError(f"{where}: {shown(text)} is not one of {', '.join(setting.choices)}")
        return text
    if setting.kind == "path":
        if not text:
            raise ConfigError(f"{where}: empty path")
        if "\x00" in text:
            raise ConfigError(f"{where}: {shown(text)} contains a NUL byte")
        return Path(text)
    if not text:
        return None
    return text


# --- the frozen config --------------------------------------------------------------------------


@dataclass(frozen=True)
class GateConfig:
    evaluation_results: Path
    model_artifact_path: Path
    config: Path
    output_dir: Path
    min_improvement_threshold: float
    predictions: Path | None
    weights: Weights
    metrics_scale: float
    guardrails: tuple[Guardrail, ...] | None
    confidence: float
    bootstrap_resamples: int
    allow_incomparable: bool
    registry_name: str
    experiment_name: str
    champion_alias: str
    baseline: Literal["champion", "best-ever"]
    promotion: Literal["alias", "stage", "both"]
    mlflow_tracking_uri: str
    model_uri: str | None
    source_artifact_path: str
    force_deploy: bool
    dry_run: bool
    fail_on_reject: bool
    skip_hf_push: bool
    hf_model_id: str | None
    hf_private: bool
    create_model_card: bool
    merge: bool
    base_model: str | None
    card_template: Path | None
    hf_export_dir: Path | None
    max_shard_size: int
    hf_license: str
    hf_language: tuple[str, ...]
    hf_tags: tuple[str, ...]
    signing: Literal["off", "key", "sigstore"]
    signing_key: str | None = field(repr=False)  # a path or the PEM text: never shown, never recorded
    explicit: frozenset[str] = field(default=frozenset())  # settings given by flag / input
    configured: frozenset[str] = field(default=frozenset())  # given by flag / input or params.yaml
    warnings: tuple[str, ...] = ()
    tracking_uri_source: str = "default"  # where mlflow_tracking_uri came from, for the summary

    def public_params(self) -> dict[str, str]:
        """The settings worth recording as MLflow params (no secrets live in the config)."""
        return {
            "min_improvement_threshold": f"{self.min_improvement_threshold:g}",
            "weights": ",".join(f"{k}={v:g}" for k, v in self.weights.values.items()),
            "force_deploy": str(self.force_deploy).lower(),
            "baseline_policy": self.baseline,
            "promotion": self.promotion,
            "champion_alias": self.champion_alias,
            "registry_name": self.registry_name,
            "metrics_scale": f"{self.metrics_scale:g}",
            "dry_run": str(self.dry_run).lower(),
            "hf_model_id": self.hf_model_id or "",
            "guardrails": ",".join(
                f"{g.metric}.{k}={v:g}"
                for g in self.guardrails or ()
                for k, v in (("min", g.min), ("max_drop", g.max_drop))
                if v is not None
            ),
            "confidence": f"{self.confidence:g}",
            "bootstrap_resamples": str(self.bootstrap_resamples),
            "allow_incomparable": str(self.allow_incomparable).lower(),
            "signing": self.signing,
        }


# --- params.yaml keys --------------------------------------------------------------------------------

# params.yaml is shared with the other stages (the E-commerce-Chatbot project keeps `model:`, `lora:`,
# `training:`, `data:`, `evaluation:` ... there): those sections are theirs and never checked. Inside
# `deployment:` every key must be one deploygate reads, because a typo there would silently run with a
# default. `mlflow:` is shared too (the training stage reads its tracking_uri and experiment_name), so
# there only a key close to a known one is refused as a typo; any other key is left to its stage.
OWN_SECTION = "deployment"
SHARED_SECTION = "mlflow"
EXTRA_PARAMS = (("deployment", "huggingface", "push_to_hub"),)
NEAR_MISS = 0.8  # difflib ratio from which an unknown name counts as a misspelling of a known one


def known_params() -> dict[str, Any]:
    """The params.yaml keys deploygate reads, as a tree: {section: {key: None | {subkey: ...}}}."""
    tree: dict[str, Any] = {}
    for path in [*(p for s in SETTINGS for p in s.params), *EXTRA_PARAMS]:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], None)
    return tree


def _shown(key: object) -> str:
    return repr(key) if not isinstance(key, str) or not key.isprintable() else key


def _closest(key: object, known: list[str], cutoff: float) -> str | None:
    if not isinstance(key, str):
        return None
    lowered = {k.lower(): k for k in known}
    if key.lower() in lowered:
        return lowered[key.lower()]
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[match[0]] if match else None


def check_params_keys(params: Mapping[Any, Any], source: str = "params.yaml") -> None:
    """Refuse misspelled keys in the sections deploygate reads (exit 2), suggesting the known key."""
    tree = known_params()
    for key in params:
        if key in tree:
            continue
        near = _closest(key, list(tree), NEAR_MISS)
        if near is not None:
            raise ConfigError(
                f"{source}: section {_shown(key)!r} is not one deploygate reads; did you mean "
                f"{near!r}? (its keys would otherwise be ignored)"
            )
    for section, strict in ((OWN_SECTION, True), (SHARED_SECTION, False)):
        if params.get(section) is not None:
            _check_keys(params[section], tree[section], (section,), source, strict=strict)


def _check_keys(
    node: object, known: Mapping[str, Any], path: tuple[str, ...], source: str, *, strict: bool
) -> None:
    where = f"{source} {'.'.join(path)}"
    if not isinstance(node, Mapping):
        shown = repr(node) if len(repr(node)) <= 60 else repr(node)[:57] + "..."
        raise ConfigError(f"{where}: {shown} is a {type(node).__name__}, not a mapping of {', '.join(known)}")
    for key, value in node.items():
        if key not in known:
            near = _closest(key, list(known), 0.6 if strict else NEAR_MISS)
            if near is None and not strict:
                continue  # another stage's key
            fix = f"did you mean {near!r}? (known keys: " if near else "deploygate reads only: "
            raise ConfigError(
                f"{where}.{_shown(key)}: unknown key; {fix}{', '.join(known)}{')' if near else ''}"
            )
        sub = known[key]
        if isinstance(sub, dict) and value is not None:
            _check_keys(value, sub, (*path, key), source, strict=strict)


def _lookup(params: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = params
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


DEFAULT_LOCAL_TRACKING_URI = "sqlite:///mlflow.db"


def build_config(
    given: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    env_tracking_uri: str | None = None,
    env_experiment_name: str | None = None,
    source_names: Mapping[str, str] | None = None,
) -> GateConfig:
    """Merge given values (already typed or raw text), params.yaml and defaults into a GateConfig.

    `given` maps setting names to values from flags / action inputs (None or absent: not given).
    `source_names` says how to name a given setting in errors (`--weights`, `input weights`).
    """
    params = params or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"params.yaml: the top level is a {type(params).__name__}, not a mapping")
    check_params_keys(params, str(given.get("config") or "params.yaml"))
    unknown = set(given) - set(SETTINGS_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    names = source_names or {}
    values, explicit, from_params = _values(given, params, names)
    # params.yaml's huggingface.push_to_hub: false means the same as --skip-hf-push.
    found, push = _lookup(params, ("deployment", "huggingface", "push_to_hub"))
    if "skip-hf-push" not in explicit and found and push is not None:
        values["skip_hf_push"] = not parse_bool(push, "params.yaml deployment.huggingface.push_to_hub")

    weights_where = (
        names.get("weights", "--weights")
        if "weights" in explicit
        else "params.yaml deployment.weighted_scoring.weights"
    )
    values["weights"] = resolve_weights(values["weights"], source=weights_where)
    values["metrics_scale"] = float(values["metrics_scale"])
    for name in ("registry-name", "experiment-name", "champion-alias"):
        value = values[name.replace("-", "_")]
        if not value or not str(value).strip():
            raise ConfigError(f"{names.get(name, '--' + name)}: empty; give a name")
    _check_alias(values["champion_alias"], names, explicit)
    values["signing"] = _signing(
        values["signing"], values["signing_key"], names, configured=explicit | from_params
    )
    if "experiment-name" not in explicit and env_experiment_name and env_experiment_name.strip():
        # MLflow's own variable, as the seed honoured it
        values["experiment_name"] = env_experiment_name.strip()
    given_uri = values["mlflow_tracking_uri"] if "mlflow-tracking-uri" in explicit else None
    params_uri = None if given_uri else values["mlflow_tracking_uri"]
    values["mlflow_tracking_uri"], uri_source = tracking_uri_and_source(
        given_uri,
        env_tracking_uri,
        params_uri,
        flag=names.get("mlflow-tracking-uri", "--mlflow-tracking-uri"),
    )
    return GateConfig(
        **values,
        explicit=frozenset(explicit),
        configured=frozenset(explicit | from_params),
        warnings=values["weights"].warnings,
        tracking_uri_source=uri_source,
    )


def _values(
    given: Mapping[str, Any], params: Mapping[str, Any], names: Mapping[str, str]
) -> tuple[dict[str, Any], set[str], set[str]]:
    """Each setting's value: given > params.yaml (its first path that is set) > default; and which
    settings were given, which came from params.yaml."""
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    from_params: set[str] = set()
    for setting in SETTINGS:
        raw = given.get(setting.name)
        if raw is not None:
            values[setting.attr] = parse_value(setting, raw, names.get(setting.name, f"--{setting.name}"))
            explicit.add(setting.name)
            continue
        for path in setting.params:
            found, raw = _lookup(params, path)
            if found and raw is not None:
                values[setting.attr] = parse_value(setting, raw, "params.yaml " + ".".join(path))
                from_params.add(setting.name)
                break
        else:
            values[setting.attr] = parse_value(setting, setting.default, f"default {setting.name}")
    return values, explicit, from_params


def _signing(method: str, key: str | None, names: Mapping[str, str], *, configured: set[str]) -> str:
    """The signing method: a signing-key given alone means `key`; `key` needs one, `sigstore` none."""
    if key and method == "off" and "signing" not in configured:
        return "key"
    if method == "key" and not key:
        raise ConfigError(
            f"{names.get('signing', '--signing')}: key needs signing-key (a PEM file path, or the PEM text "
            "from a secret); give it, or use signing: sigstore or off"
        )
    if method != "key" and key:
        raise ConfigError(
            f"{names.get('signing-key', '--signing-key')}: given, but signing is {method}; set signing: key, "
            "or leave signing-key out"
        )
    return method


def _check_alias(alias: str, names: Mapping[str, str], explicit: set[str]) -> None:
    if (
        not alias.replace("-", "").replace("_", "").isalnum()
        or alias[0].isdigit()
        or alias.lower() == "latest"
        or not _MLFLOW_ALIAS.fullmatch(alias)
        or _MLFLOW_VERSION_ALIAS.fullmatch(alias)
    ):
        where = (
            names.get("champion-alias", "--champion-alias")
            if "champion-alias" in explicit
            else "params.yaml deployment.champion_alias"
        )
        raise ConfigError(
            f"{where}: {shown(alias)} is not a valid MLflow alias; "
            "use letters, digits, - and _ (at most 255), not starting with a digit, not 'latest' and not "
            "v<number> (MLflow reserves those for versions)"
        )


def tracking_uri_and_source(
    given: str | None, env_uri: str | None, params_uri: object, *, flag: str = "--mlflow-tracking-uri"
) -> tuple[str, str]:
    """The tracking URI and where it came from: the flag / input, MLFLOW_TRACKING_URI, params.yaml
    mlflow.tracking_uri, else the local sqlite store."""
    if given:
        return given, flag
    if env_uri:
        return env_uri, "MLFLOW_TRACKING_URI"
    if isinstance(params_uri, str) and params_uri.strip():
        return params_uri.strip(), "params.yaml mlflow.tracking_uri"
    return DEFAULT_LOCAL_TRACKING_URI, "default: no MLFLOW_TRACKING_URI, no params.yaml mlflow.tracking_uri"


Parser = Callable[[object, str], Any]
