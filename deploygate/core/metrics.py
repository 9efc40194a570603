"""Evaluation results in, validated metric values out; weights in, a weighted score out.

Pure: values in, values out. Reading the file is the shell's job (see `inputs.py`); this module
only judges the parsed JSON. The seed's `metrics.json` is a flat object of floats on a 0-1 scale;
other keys (`rouge1_*`, `weighted_score`, `contribution_*`, ...) are tolerated and not scored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from deploygate.core.errors import SHOWN_LIMIT, ConfigError, MetricsError, shown

# The seed's weights: BLEU-4 matters most, ROUGE-L precision guards against hallucination.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "bleu1": 0.10,
    "bleu2": 0.15,
    "bleu3": 0.25,
    "bleu4": 0.40,
    "rougeL_precision": 0.10,
}
STANDARD_METRICS = tuple(DEFAULT_WEIGHTS)

# Spellings seen in the wild, folded (lowercase, alphanumerics only) -> the canonical name.
_ALIASES = {
    **{f"bleu{n}": f"bleu{n}" for n in range(1, 5)},
    **{f"bleu{n}score": f"bleu{n}" for n in range(1, 5)},
    "rougelprecision": "rougeL_precision",
    "rougelp": "rougeL_precision",
    "rougelprec": "rougeL_precision",
}
_SCALES = (1.0, 100.0)
WEIGHT_SUM_TOLERANCE = 1e-9


def fold(key: str) -> str:
    """The comparison form of a metric name: `BLEU-1`, `bleu_1` and `bleu1` all fold to `bleu1`."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


def canonical_name(key: str) -> str:
    """The name deploygate reports a metric under: standard metrics get one spelling."""
    return _ALIASES.get(fold(key), key)


@dataclass(frozen=True)
class Weights:
    """Metric weights that sum to 1; `normalised_from` keeps the sum the user gave when it was not 1."""

    values: Mapping[str, float]
    normalised_from: float | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        if self.normalised_from is None:
            return ()
        return (f"weights summed to {self.normalised_from:g}, not 1: normalised to sum to 1",)


@dataclass(frozen=True)
class EvaluationMetrics:
    """Validated metric values on a 0-1 scale, under canonical names, and where each came from."""

    values: Mapping[str, float]
    keys_used: Mapping[str, str]  # canonical name -> the key found in the file
    source: str = "metrics.json"
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class WeightedScore:
    """The weighted score and what each metric contributed to it (weight x value)."""

    score: float
    contributions: Mapping[str, float]
    weights: Mapping[str, float]


def _number(value: object, where: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {shown(value)} is not a number; {fix}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ConfigError(f"{where}: {shown(value)} is too large to be a number; {fix}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {shown(value)} is not finite; {fix}")
    return number


def resolve_weights(raw: Mapping[str, object] | None, *, source: str = "weights") -> Weights:
    """Check user weights (None: the seed's defaults) and normalise them to sum to 1.

    Names are folded to canonical spellings here; whether each names a metric the evaluation
    results contain is checked in `parse_metrics`, which sees the file.
    """
    if raw is None:
        return Weights(dict(DEFAULT_WEIGHTS))
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"{source}: {shown(raw)} is not a mapping of metric name to weight; "
            "write e.g. {bleu4: 0.4, rougeL_precision: 0.1}"
        )
    values: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{source}: weight name {shown(key)} is not a metric name")
        name = canonical_name(key.strip())
        if name in values:
            raise ConfigError(
                f"{source}: metric {shown(name)} has two weights (spelled {shown(key)} too); keep one"
            )
        weight = _number(value, f"{source}.{_shown(key)}", "give a number such as 0.25")
        if weight < 0:
            raise ConfigError(f"{source}.{_shown(key)}: {weight:g} is negative; weights must be >= 0")
        values[name] = weight
    total = math.fsum(values.values())
    if total <= 0:
        raise ConfigError(f"{source}: the weights sum to {total:g}; at least one weight must be positive")
    if abs(total - 1.0) <= WEIGHT_SUM_TOLERANCE:
        return Weights(values)
    return Weights({k: v / total for k, v in values.items()}, normalised_from=total)


def parse_scale(raw: object, *, source: str = "metrics-scale") -> float:
    """`1` (metrics are fractions, the seed's way) or `100` (percentages)."""
    try:
        scale = float(str(raw).strip())
    except ValueError:
        scale = math.nan
    if scale not in _SCALES:
        raise ConfigError(
            f"{source}: {shown(raw)} is not a metric scale; use 1 (values 0-1) or 100 (values 0-100)"
        )
    return scale


def parse_metrics(
    data: object,
    weights: Weights,
    *,
    scale: float = 1.0,
    source: str = "metrics.json",
    also: tuple[str, ...] = (),
) -> EvaluationMetrics:
    """Find, check and rescale every weighted metric (and the `also` ones, e.g. guardrail
    metrics, which are checked the same way but not scored) in a parsed results object."""
    if not isinstance(data, Mapping):
        kind = type(data).__name__ if data is not None else "null"
        raise MetricsError(
            f"{source}: the evaluation results are a JSON {kind}, not an object; "
            'write a flat object such as {"bleu1": 0.41, "bleu4": 0.12, "rougeL_precision": 0.5}'
        )
    found: dict[str, str] = {}
    for key in data:
        if not isinstance(key, str):
            continue
        name = canonical_name(key)
        if name in found and found[name] != key and name in weights.values:
            raise MetricsError(
                f"{source}: {shown(found[name])} and {shown(key)} both spell metric {shown(name)}; keep one of them"
            )
        found.setdefault(name, key)
    folded_found = {fold(name): name for name in found}

    values: dict[str, float] = {}
    keys_used: dict[str, str] = {}
    wanted = list(weights.values) + [n for n in also if n not in weights.values]
    matches = {name: found.get(name) or found.get(folded_found.get(fold(name), "")) for name in wanted}
    missing = [name for name, match in matches.items() if match is None]
    if missing:
        raise MetricsError(_missing_message(data, missing, matches, weights, source))
    for name in wanted:
        match = matches[name]
        assert match is not None
        values[name] = _metric_value(match, data[match], scale, source)
        keys_used[name] = match
    notes = tuple(f"{name}: read from key {shown(key)}" for name, key in keys_used.items() if key != name)
    return EvaluationMetrics(values=values, keys_used=keys_used, source=source, notes=notes)


def _metric_value(match: str, raw: object, scale: float, source: str) -> float:
    """One metric's value on the 0-1 scale; MetricsError naming the key, the value and the fix."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise MetricsError(
            f"{source}: {shown(match)} is {shown(raw)}, not a number; write it as a number from 0 to 1"
        )
    try:
        value = float(raw)
    except OverflowError:  # an integer of hundreds of digits
        raise MetricsError(
            f"{source}: {shown(match)} is {shown(raw)}, too large to be a metric; "
            "write it as a number from 0 to 1"
        ) from None
    if not math.isfinite(value):
        raise MetricsError(
            f"{source}: {shown(match)} is {shown(raw)}; the evaluation produced no usable value, re-run it"
        )
    if value < 0:
        raise MetricsError(f"{source}: {shown(match)} is {value:g}, below 0; metrics are scores from 0 to 1")
    value /= scale
    if value > 1:
        if scale == 1.0:
            raise MetricsError(
                f"{source}: {shown(match)} is {shown(raw)}, above 1; it looks like a 0-100 scale: "
                "declare it with --metrics-scale 100 (params.yaml deployment.metrics_scale: 100)"
            )
        raise MetricsError(f"{source}: {shown(match)} is {shown(raw)}, above 100 on the declared 0-100 scale")
    return value


def _missing_message(
    data: Mapping[object, object],
    missing: list[str],
    matches: Mapping[str, str | None],
    weights: Weights,
    source: str,
) -> str:
    """Every missing metric in one line, and the --weights that would score the keys present instead."""

    def role(name: str) -> str:
        return f"weight {weights.values[name]:.3g}" if name in weights.values else "guardrail"

    listed = ", ".join(f"{name!r} ({role(name)})" for name in missing)
    if len(missing) == 1:
        what, fix = f"metric {listed} is missing", "add it to the evaluation results"
    else:
        what, fix = f"{len(missing)} metrics are missing: {listed}", "add them to the evaluation results"
    unusual = [name for name in missing if name not in STANDARD_METRICS]
    if unusual:
        fix = f"check the spelling of {', '.join(map(repr, unusual))}, or {fix}"
    if any(name in weights.values for name in missing):
        # the weighted metrics present keep their weights; with none present, the numeric keys share equally
        present = {
            name: weights.values[name]
            for name, match in matches.items()
            if match is not None and name in weights.values
        }
        if not present:
            numeric = [
                k
                for k, v in data.items()
                if isinstance(k, str)
                and k.isprintable()
                and not set(k) & set(",=:'")
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            ][:8]
            present = {k: 1 / len(numeric) for k in numeric}
        if present:
            fix += (
                ", or score only the keys present: --weights '"
                + ",".join(f"{k}={v:.3g}" for k, v in present.items())
                + "'"
            )
    # keys are the file's: shown as typed unless they hold newlines or other unprintables
    keys = ", ".join(_shown(k) for k in sorted(k for k in data if isinstance(k, str))[:12]) or "none"
    return f"{source}: {what}; {fix} (keys present: {keys})"


def _shown(key: str) -> str:
    """A key as typed when it is printable and short, else as `shown` echoes any value."""
    return key if key.isprintable() and len(key) <= SHOWN_LIMIT else shown(key)


def weighted_score(metrics: EvaluationMetrics, weights: Weights) -> WeightedScore:
    """Sum of weight x value over the weighted metrics (math.fsum: order-independent rounding)."""
    contributions = {name: weights.values[name] * metrics.values[name] for name in weights.values}
    return WeightedScore(
        score=math.fsum(contributions.values()),
        contributions=contributions,
        weights=dict(weights.values),
    )
