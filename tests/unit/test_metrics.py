"""Parsing evaluation results and weights: spellings, custom metrics, every refusal."""

from __future__ import annotations

import math

import pytest

from deploygate.core.errors import ConfigError, MetricsError
from deploygate.core.metrics import DEFAULT_WEIGHTS, parse_metrics, resolve_weights, weighted_score

SEED = {
    "bleu1": 0.41,
    "bleu2": 0.28,
    "bleu3": 0.19,
    "bleu4": 0.14,
    "rouge1_precision": 0.5,
    "rougeL_precision": 0.45,
    "rougeL_recall": 0.4,
    "rougeL_fmeasure": 0.42,
    "weighted_score": 0.99,
    "contribution_bleu1": 0.041,
}
W = resolve_weights(None)


def test_seed_file_scores_with_default_weights():
    m = parse_metrics(SEED, W)
    s = weighted_score(m, W)
    expected = 0.1 * 0.41 + 0.15 * 0.28 + 0.25 * 0.19 + 0.4 * 0.14 + 0.1 * 0.45
    assert s.score == pytest.approx(expected, abs=1e-15)
    assert s.contributions["bleu4"] == pytest.approx(0.4 * 0.14)
    assert set(m.values) == set(DEFAULT_WEIGHTS)  # weighted_score, contribution_*, rouge1_* ignored


@pytest.mark.parametrize(
    "spellings",
    [
        {"bleu_1": 0.4, "bleu_2": 0.3, "bleu_3": 0.2, "bleu_4": 0.1, "rouge_l_precision": 0.5},
        {"BLEU-1": 0.4, "BLEU-2": 0.3, "BLEU-3": 0.2, "BLEU-4": 0.1, "rougeL_p": 0.5},
        {"bleu-1": 0.4, "Bleu 2": 0.3, "bleu3": 0.2, "bleu_4_score": 0.1, "ROUGE-L-Precision": 0.5},
    ],
)
def test_common_spellings_and_which_key_was_used(spellings):
    m = parse_metrics(spellings, W)
    assert m.values == pytest.approx(
        {"bleu1": 0.4, "bleu2": 0.3, "bleu3": 0.2, "bleu4": 0.1, "rougeL_precision": 0.5}
    )
    assert set(m.keys_used.values()) == set(spellings)
    assert m.notes  # says which key stood for which metric


def test_custom_metric_can_be_weighted():
    w = resolve_weights({"bleu4": 0.5, "exact_match": 0.5})
    m = parse_metrics({**SEED, "Exact-Match": 0.3}, w)
    assert weighted_score(m, w).score == pytest.approx(0.5 * 0.14 + 0.5 * 0.3)


def test_weights_are_normalised_with_a_warning():
    w = resolve_weights({"bleu1": 1, "bleu4": 3})
    assert w.values == pytest.approx({"bleu1": 0.25, "bleu4": 0.75})
    assert w.normalised_from == 4 and w.warnings


def test_percent_scale():
    pct = {k: v * 100 for k, v in SEED.items()}
    assert parse_metrics(pct, W, scale=100.0).values["bleu4"] == pytest.approx(0.14)


BAD_METRICS = [
    ("not an object", [0.1, 0.2], "not an object"),
    ("null", None, "null"),
    ("missing bleu4", {k: v for k, v in SEED.items() if k != "bleu4"}, "'bleu4'"),
    ("string value", {**SEED, "bleu4": "0.14"}, "not a number"),
    ("boolean value", {**SEED, "bleu4": True}, "not a number"),
    ("NaN", {**SEED, "bleu4": math.nan}, "no usable value"),
    ("infinity", {**SEED, "bleu4": math.inf}, "no usable value"),
    ("negative", {**SEED, "bleu4": -0.1}, "below 0"),
    ("percent scale undeclared", {**SEED, "bleu4": 14.0}, "0-100 scale"),
    ("two spellings of one metric", {**SEED, "bleu_4": 0.2}, "both spell"),
]


@pytest.mark.parametrize(("data", "needle"), [c[1:] for c in BAD_METRICS], ids=[c[0] for c in BAD_METRICS])
def test_bad_metrics_are_refused_clearly(data, needle):
    with pytest.raises(MetricsError) as err:
        parse_metrics(data, W, source="m.json")
    message = str(err.value)
    assert needle in message and "m.json" in message and "\n" not in message


def test_percent_scale_message_says_how_to_declare_it():
    with pytest.raises(MetricsError, match="--metrics-scale 100"):
        parse_metrics({**SEED, "bleu1": 41.0}, W)


def test_unknown_weight_name_is_refused():
    with pytest.raises(MetricsError, match="check the spelling"):
        parse_metrics(SEED, resolve_weights({"bleu5": 1.0}))


BAD_WEIGHTS = [
    ("negative", {"bleu1": -0.1, "bleu4": 1.0}, "negative"),
    ("zero sum", {"bleu1": 0, "bleu4": 0}, "sum to 0"),
    ("not a number", {"bleu1": "a lot"}, "not a number"),
    ("infinite", {"bleu1": math.inf}, "not finite"),
    ("empty", {}, "not a mapping"),
    ("not a mapping", ["bleu1"], "not a mapping"),
    ("duplicate spelling", {"bleu1": 0.5, "BLEU-1": 0.5}, "two weights"),
]


@pytest.mark.parametrize(("raw", "needle"), [c[1:] for c in BAD_WEIGHTS], ids=[c[0] for c in BAD_WEIGHTS])
def test_bad_weights(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_weights(raw)


def _suggested_weights(message: str) -> str:
    assert message.count("--weights '") == 1, message
    return message.split("--weights '", 1)[1].split("'", 1)[0]


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        (("bleu3", "bleu4"), "bleu1=0.1,bleu2=0.15,rougeL_precision=0.1"),
        (
            ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL_precision"),
            "rouge1_precision=",
        ),  # none weighted: the numeric keys
    ],
)
def test_every_missing_metric_in_one_message_with_a_weights_line_that_works(drop, expected):
    from deploygate.core.settings import parse_weights_text

    data = {k: v for k, v in SEED.items() if k not in drop}
    with pytest.raises(MetricsError) as err:
        parse_metrics(data, W)
    message = str(err.value)
    assert "\n" not in message
    for name in drop:
        assert f"'{name}' (weight" in message
    assert (f"{len(drop)} metrics are missing" if len(drop) > 1 else "is missing") in message
    suggestion = _suggested_weights(message)
    assert suggestion.startswith(expected)
    weights = resolve_weights(parse_weights_text(suggestion, "--weights"))
    assert parse_metrics(data, weights).values  # the suggested line scores this very file


def test_a_missing_guardrail_metric_suggests_no_weights():
    with pytest.raises(MetricsError) as err:
        parse_metrics(SEED, W, also=("toxicity",))
    assert "'toxicity' (guardrail) is missing; check the spelling of 'toxicity'" in str(err.value)
    assert "--weights" not in str(err.value)
