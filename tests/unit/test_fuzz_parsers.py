"""Fuzz the input parsers: whatever the bytes, a documented deploygate error (InputError) or a value.

hypothesis drives parse_metrics, resolve_weights, parse_weights_text, parse_guardrails, build_config
(from params.yaml-like YAML and from flag text), load_params, read_json, load_model_source and
parse_predictions. Anything else escaping them (KeyError, TypeError, RecursionError, ...) is a crash
the shells would show as "unexpected error" with exit 1 instead of a clear exit 2. `FUZZ_EXAMPLES`
sums the examples per run (quoted by the README).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploygate.adapters.files import load_model_source, load_params, read_json
from deploygate.core.errors import InputError
from deploygate.core.evaluation import parse_predictions
from deploygate.core.metrics import DEFAULT_WEIGHTS, Weights, parse_metrics, resolve_weights
from deploygate.core.settings import SETTINGS, build_config, parse_guardrails, parse_weights_text

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FUZZ_TESTS = 11  # the @given tests below; FUZZ_EXAMPLES = FUZZ_TESTS * EXAMPLES
FUZZ_EXAMPLES = FUZZ_TESTS * EXAMPLES

METRIC_NAMES = st.sampled_from(
    [
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "rougeL_precision",
        "BLEU-1",
        "bleu_4",
        "rouge_l_precision",
        "rougeL_p",
        "x",
        "",
        " ",
        "bleu1 ",
        "weighted_score",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(METRIC_NAMES | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=20,
)
METRIC_OBJECTS = st.dictionaries(METRIC_NAMES | st.text(max_size=8), SCALARS | JSON_VALUES, max_size=10)


def _is_ok_or_input_error(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        assert str(exc).strip() and "\n" not in exc.message, f"error message must be one line: {exc!r}"
        return None


@FUZZ
@given(data=METRIC_OBJECTS | JSON_VALUES, scale=st.sampled_from([1.0, 100.0]))
def test_parse_metrics(data: Any, scale: float) -> None:
    parsed = _is_ok_or_input_error(parse_metrics, data, Weights(dict(DEFAULT_WEIGHTS)), scale=scale)
    if parsed is not None:
        assert all(0 <= v <= 1 and math.isfinite(v) for v in parsed.values.values())


@FUZZ
@given(
    raw=st.none()
    | st.dictionaries(METRIC_NAMES | st.text(max_size=6) | st.integers(), SCALARS, max_size=6)
    | JSON_VALUES
)
def test_resolve_weights(raw: Any) -> None:
    weights = _is_ok_or_input_error(resolve_weights, raw)
    if weights is not None:
        assert math.isclose(math.fsum(weights.values.values()), 1.0, rel_tol=1e-9)
        assert all(v >= 0 and math.isfinite(v) for v in weights.values.values())


@FUZZ
@given(
    text=st.text(max_size=60)
    | st.lists(st.tuples(METRIC_NAMES, st.sampled_from("=:"), st.text(max_size=6))).map(
        lambda parts: ",".join(f"{a}{b}{c}" for a, b, c in parts)
    )
)
def test_weights_text(text: str) -> None:
    raw = _is_ok_or_input_error(parse_weights_text, text, "--weights")
    if raw is not None:
        _is_ok_or_input_error(resolve_weights, raw)


@FUZZ
@given(
    raw=st.text(max_size=60)
    | JSON_VALUES
    | st.lists(st.tuples(METRIC_NAMES, st.sampled_from(["min", "max_drop", "max", ""]), SCALARS)).map(
        lambda parts: ",".join(f"{m}.{k}={v}" for m, k, v in parts)
    )
)
def test_parse_guardrails(raw: Any) -> None:
    _is_ok_or_input_error(parse_guardrails, raw, "--guardrails")


FLAG_VALUES = st.dictionaries(
    st.sampled_from([s.name for s in SETTINGS]), st.text(max_size=20) | st.booleans(), max_size=6
)


@FUZZ
@given(given_=FLAG_VALUES, env_uri=st.none() | st.text(max_size=20))
def test_build_config_from_flags(given_: dict[str, Any], env_uri: str | None) -> None:
    _is_ok_or_input_error(build_config, given_, {}, env_tracking_uri=env_uri)


PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "deployment": st.dictionaries(
            st.sampled_from(
                [
                    "min_improvement_threshold",
                    "weighted_scoring",
                    "metrics_scale",
                    "guardrails",
                    "model_registry_name",
                    "experiment_name",
                    "champion_alias",
                    "baseline",
                    "promotion",
                    "huggingface",
                    "significance",
                    "allow_incomparable",
                    "predictions",
                    "model_uri",
                ]
            ),
            JSON_VALUES
            | st.fixed_dictionaries({"weights": JSON_VALUES})
            | st.fixed_dictionaries(
                {},
                optional={
                    "push_to_hub": SCALARS,
                    "model_id": SCALARS,
                    "language": JSON_VALUES,
                    "tags": JSON_VALUES,
                    "private": SCALARS,
                    "template": SCALARS,
                },
            )
            | st.fixed_dictionaries({}, optional={"confidence": SCALARS, "resamples": SCALARS}),
            max_size=6,
        )
        | JSON_VALUES,
        "mlflow": st.dictionaries(st.sampled_from(["tracking_uri", "experiment_name"]), SCALARS, max_size=2)
        | JSON_VALUES,
    },
)


@FUZZ
@given(params=PARAMS)
def test_build_config_from_params(params: dict[str, Any]) -> None:
    # through YAML and back, as load_params would hand it over (YAML has no NaN-as-key problems)
    try:
        text = yaml.safe_dump(params)
    except yaml.YAMLError:
        return
    loaded = yaml.safe_load(text)
    _is_ok_or_input_error(build_config, {}, loaded if isinstance(loaded, dict) else {})


@FUZZ
@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | PARAMS.map(lambda p: yaml.safe_dump(p).encode())
    | st.sampled_from(
        [
            b"deployment: " + b"[" * 5000,
            b"a: &a [*a]\n",
            b"deployment: !!python/object:os.system {}\n",
            b"\xef\xbb\xbfdeployment: {}\n",
            b"deployment:\n\tx: 1\n",
            b"%YAML 9.9\n---\n",
        ]
    )
)
def test_load_params(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_bytes(raw)
    params = _is_ok_or_input_error(load_params, path, explicit=True)
    if params is not None:
        _is_ok_or_input_error(build_config, {"config": str(path)}, params)


@FUZZ
@given(
    raw=st.binary(max_size=200)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"\xef\xbb\xbf{}", b"NaN", b"-Infinity", b"1e999"])
)
def test_read_json(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("json") / "metrics.json"
    path.write_bytes(raw)
    data = _is_ok_or_input_error(read_json, path, "evaluation-results")
    if data is not None:
        _is_ok_or_input_error(parse_metrics, data, Weights(dict(DEFAULT_WEIGHTS)))


@FUZZ
@given(
    record=st.dictionaries(
        st.sampled_from(
            ["mlflow_run_id", "model_uri", "local_path", "artifact_path", "tracking_uri", "model_name"]
        ),
        SCALARS | JSON_VALUES,
        max_size=4,
    )
    | JSON_VALUES,
    model_uri=st.none() | st.text(max_size=12),
)
def test_load_model_source(
    tmp_path_factory: pytest.TempPathFactory, record: Any, model_uri: str | None
) -> None:
    path = tmp_path_factory.mktemp("loc") / "location.json"
    path.write_text(json.dumps(record))
    _is_ok_or_input_error(
        load_model_source, path, explicit=True, model_uri=model_uri or None, artifact_path="model"
    )


LINES = st.lists(
    JSON_VALUES.map(json.dumps)
    | st.text(max_size=30)
    | st.fixed_dictionaries({"prediction": SCALARS, "reference": SCALARS}).map(json.dumps),
    max_size=6,
)


@FUZZ
@given(lines=LINES, sep=st.sampled_from(["\n", "\r\n", "\r"]))
def test_parse_predictions_jsonl(lines: list[str], sep: str) -> None:
    _is_ok_or_input_error(parse_predictions, sep.join(lines), fmt="jsonl", source="predictions.jsonl")


CSV_TEXT = st.text(alphabet=st.sampled_from('ab,"\n\r \x00prediction,reference'), max_size=80) | st.lists(
    st.lists(st.text(max_size=8), min_size=1, max_size=3).map(lambda cells: ",".join(cells)), max_size=5
).map(lambda rows: "prediction,reference\n" + "\n".join(rows))


@FUZZ
@given(text=CSV_TEXT)
def test_parse_predictions_csv(text: str) -> None:
    _is_ok_or_input_error(parse_predictions, text, fmt="csv", source="predictions.csv")


def test_fuzz_count() -> None:
    """Keep FUZZ_TESTS honest (it feeds the README figure)."""
    tests = [v for k, v in globals().items() if k.startswith("test_") and hasattr(v, "hypothesis")]
    assert len(tests) == FUZZ_TESTS
    print(f"\nfuzz: {FUZZ_TESTS} parsers x {EXAMPLES} examples = {FUZZ_EXAMPLES}")
