"""Metrics from predictions and the paired bootstrap, checked against nltk, rouge_score and plain values.

nltk and rouge_score are the references here only; deploygate.core.evaluation imports neither.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.stem.porter import PorterStemmer
from nltk.translate.bleu_score import corpus_bleu
from rouge_score import rouge_scorer

from deploygate.core.errors import ConfigError, IncomparableError, MetricsError
from deploygate.core.evaluation import (
    DEFAULT_BLEU_WEIGHTS,
    METRIC_NAMES,
    ExampleStats,
    compute_stats,
    lcs_length,
    metrics_from_stats,
    paired_bootstrap,
    parse_predictions,
    porter_stem,
    read_predictions,
    references_sha256,
    rouge_tokens,
    stats_from_json,
    stats_to_json,
)
from deploygate.core.metrics import DEFAULT_WEIGHTS

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
TOLERANCE = 1e-12

Pairs = Sequence[tuple[str, str]]


def nltk_bleu(pairs: Pairs, weight: tuple[float, ...]) -> float:
    refs = [[r.lower().split()] for _, r in pairs]
    hyps = [p.lower().split() for p, _ in pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nltk warns "0 counts of n-gram overlaps"
        return float(corpus_bleu(refs, hyps, weights=weight))


def seed_metrics(pairs: Pairs) -> dict[str, float]:
    """The seed's evaluation, verbatim: nltk corpus_bleu x4 and rouge_score per example, averaged."""
    out = {name: nltk_bleu(pairs, weight) for name, weight in DEFAULT_BLEU_WEIGHTS.items()}
    precisions = [SCORER.score(r, p)["rougeL"].precision for p, r in pairs]
    out["rougeL_precision"] = math.fsum(precisions) / len(precisions)
    return out


def assert_close(ours: dict[str, float], reference: dict[str, float]) -> None:
    assert set(ours) == set(reference)
    for name in ours:
        assert ours[name] == pytest.approx(reference[name], abs=TOLERANCE, rel=TOLERANCE), name


_VOCABULARY_TEXT = (
    "the a model running runs ran happily generalization cat dogs on mat sat quickly is was "
    "hopeful hopefulness Tokenization! don't café naïve x y 1990s e-mail (parens) ĞÜŞ 東京 "
    "studies studying agreed feed skies dying relational"
)
VOCABULARY = _VOCABULARY_TEXT.split()


def random_pairs(seed: int, n: int, max_len: int = 15) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(0, max_len)))

    return [(sentence(), sentence()) for _ in range(n)]


# --- the Porter stemmer and tokenisation ------------------------------------------------------------

_ENGLISH_TEXT = (
    "caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled "
    "sized hopping tanned falling hissing fizzed failing filing happy sky relational conditional "
    "rational valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli "
    "vietnamization predication operator feudalism decisiveness hopefulness callousness formaliti "
    "sensitiviti sensibiliti triplicate formative formalize electriciti electrical hopeful goodness "
    "revival allowance inference airliner gyroscopic adjustable defensible irritant replacement "
    "adjustment dependent adoption homologou communism activate angulariti homologous effective "
    "bowdlerize probate rate cease controll roll generously generalization dying lying tying news "
    "innings outings cannings howe proceed exceed succeed skies spied died apologies fulli "
    "archaeology analogies beautifully"
)
ENGLISH = _ENGLISH_TEXT.split()


def test_porter_stem_is_nltks_on_english_words() -> None:
    nltk_stemmer = PorterStemmer()
    assert [porter_stem(w) for w in ENGLISH] == [nltk_stemmer.stem(w) for w in ENGLISH]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefilmnorstuyz", min_size=1, max_size=14))
def test_porter_stem_is_nltks_on_any_word(word: str) -> None:
    assert porter_stem(word) == PorterStemmer().stem(word)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Hello, World!",
        "e-mail don't 1990s",
        "café naïve 東京",
        "The runners were running quickly.",
        "İstanbul KELVIN",
        "a\tb\nc",
    ],
)
def test_rouge_tokens_are_rouge_scores(text: str) -> None:
    assert rouge_tokens(text) == SCORER._tokenizer.tokenize(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=12), st.lists(st.sampled_from("abcd"), max_size=12))
def test_lcs_length_is_the_dynamic_programme(a: list[str], b: list[str]) -> None:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = (
                table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
            )
    assert lcs_length(a, b) == table[-1][-1]


# --- metrics match the seed's evaluation -----------------------------------------------------------

EDGE_CASES: dict[str, list[tuple[str, str]]] = {
    "empty prediction": [("", "the cat sat on the mat"), ("the cat sat", "the cat sat on the mat")],
    "all predictions empty": [("", "the cat"), ("", "a dog")],
    "shorter than 4 tokens": [("the cat", "the cat sat on the mat"), ("a", "a dog")],
    "no matches at all": [("x y z", "a b c"), ("q", "r s")],
    "no 4-gram matches": [("the cat sat on", "the cat sat in the hat"), ("a b c", "a b c d")],
    "punctuation": [("Hello, world!", "hello world"), ("it's (fine).", "It's fine.")],
    "unicode": [("café naïve 東京 ĞÜŞ", "Café naïve 東京"), ("İstanbul straße", "istanbul STRASSE")],
    "empty reference": [("the cat", ""), ("the cat sat", "the cat sat")],
    "identical": [("the cat sat on the mat", "The cat sat on the mat")],
    "longer than reference": [("the cat sat on the mat and more words here", "the cat sat on the mat")],
    "repeated words are clipped": [("the the the the the the the", "the cat is on the mat")],
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_match_nltk_and_rouge_score(case: str) -> None:
    pairs = EDGE_CASES[case]
    assert_close(metrics_from_stats(compute_stats(pairs)), seed_metrics(pairs))


@pytest.mark.parametrize("seed", range(5))
def test_random_corpora_match_nltk_and_rouge_score_exactly(seed: int) -> None:
    pairs = random_pairs(seed, 200)
    ours, reference = metrics_from_stats(compute_stats(pairs)), seed_metrics(pairs)
    assert ours == reference  # operation for operation: bit-identical, not just close


def test_per_example_rouge_precision_is_rouge_scores() -> None:
    pairs = random_pairs(7, 100)
    stats = compute_stats(pairs)
    assert list(stats.rougeL_precisions) == [SCORER.score(r, p)["rougeL"].precision for p, r in pairs]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c", "Runs", "running", "d."]), max_size=8),
            st.lists(st.sampled_from(["a", "b", "c", "run", "Running", "d"]), max_size=8),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_metrics_match_nltk_on_random_small_corpora(corpus: list[tuple[list[str], list[str]]]) -> None:
    pairs = [(" ".join(p), " ".join(r)) for p, r in corpus]
    assert_close(metrics_from_stats(compute_stats(pairs)), seed_metrics(pairs))


def test_a_resample_gives_the_metrics_of_the_resampled_corpus() -> None:
    pairs = random_pairs(3, 60)
    indices = np.random.default_rng(0).integers(0, len(pairs), size=len(pairs))
    ours = metrics_from_stats(compute_stats(pairs), indices)
    assert_close(ours, seed_metrics([pairs[i] for i in indices]))


def test_bleu_weights_are_a_parameter_and_bleu3_defaults_to_the_seeds_033() -> None:
    pairs = random_pairs(4, 80)
    stats = compute_stats(pairs)
    third = metrics_from_stats(stats, bleu_weights={"bleu3": (1 / 3, 1 / 3, 1 / 3)})["bleu3"]
    assert third == pytest.approx(nltk_bleu(pairs, (1 / 3, 1 / 3, 1 / 3)), abs=TOLERANCE)
    assert metrics_from_stats(stats)["bleu3"] == pytest.approx(
        nltk_bleu(pairs, (0.33, 0.33, 0.33)), abs=TOLERANCE
    )
    assert third != metrics_from_stats(stats)["bleu3"]
    with pytest.raises(ConfigError, match="bleu5"):
        metrics_from_stats(stats, bleu_weights={"bleu5": (0.2,) * 5})


# --- persisting the statistics ---------------------------------------------------------------------


def test_stats_json_round_trip() -> None:
    stats = compute_stats(random_pairs(5, 50))
    text = stats_to_json(stats)
    again = stats_from_json(text)
    assert again == stats
    assert metrics_from_stats(again) == metrics_from_stats(stats)
    data = json.loads(text)
    assert data["version"] == 1 and data["examples"] == 50 and text == json.dumps(data, separators=(",", ":"))
    assert stats.references_sha256 == references_sha256(r for _, r in random_pairs(5, 50))


def test_references_hash_ignores_case_and_whitespace_only() -> None:
    assert references_sha256(["The  cat\tsat"]) == references_sha256(["the cat sat"])
    assert references_sha256(["the cat sat."]) != references_sha256(["the cat sat"])
    assert references_sha256(["a", "b"]) != references_sha256(["b", "a"])


def _bad(field: str, value: object) -> str:
    data = json.loads(stats_to_json(compute_stats([("a b", "a b c")])))
    data[field] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "not deploygate example statistics"),
        (json.dumps({"format": "other"}), "not deploygate example statistics"),
        (_bad("version", 99), "version 99"),
        (_bad("examples", 2), "says 2 examples but holds 1"),
        (_bad("lcs_lengths", ["1"]), "lcs_lengths must be a list of integers"),
        (_bad("lcs_lengths", [1, 2]), "lcs_lengths has 2 values for 1 examples"),
        (_bad("matches", [[3], [0], [0], [0]]), "example 0 is inconsistent"),
        (_bad("references_sha256", "abc"), "not a SHA-256"),
        (_bad("bleu_tokenisation", "sacrebleu 13a"), "tokenised differently"),
    ],
)
def test_bad_stats_json_is_a_metrics_error(text: str, message: str) -> None:
    with pytest.raises(MetricsError, match=message) as info:
        stats_from_json(text, source="stats.json")
    assert "\n" not in str(info.value) and str(info.value).startswith("stats.json: ")


# --- the paired bootstrap ----------------------------------------------------------------------------

WORDS = [f"w{i}" for i in range(200)]


def references(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) for _ in range(n)]


def keep(reference: str, k: int) -> str:
    """The reference's first k tokens, the rest replaced by a wrong word."""
    tokens = reference.split()
    return " ".join(tokens[:k] + ["zz"] * (len(tokens) - k))


def test_a_large_noisy_improvement_is_not_significant_but_a_small_consistent_one_is() -> None:
    refs = references(12, 1)
    champion = [keep(r, 5) for r in refs]
    # perfect on three examples, garbage on two, the same elsewhere: a big gain on average, by luck
    noisy = [r if i < 3 else keep(r, 0) if i < 5 else keep(r, 5) for i, r in enumerate(refs)]
    big = paired_bootstrap(
        compute_stats(zip(noisy, refs, strict=True)),
        compute_stats(zip(champion, refs, strict=True)),
        DEFAULT_WEIGHTS,
        threshold=0.001,
    )

    refs2 = references(300, 2)
    champion2 = [keep(r, 5) for r in refs2]
    steady = [keep(r, 6) if i % 2 == 0 else keep(r, 5) for i, r in enumerate(refs2)]  # one more token, often
    small = paired_bootstrap(
        compute_stats(zip(steady, refs2, strict=True)),
        compute_stats(zip(champion2, refs2, strict=True)),
        DEFAULT_WEIGHTS,
        threshold=0.001,
    )

    assert big.observed_difference > small.observed_difference > 0.001
    assert not big.significant and big.lower_bound <= 0.001 and big.p_value > 0.05
    assert small.significant and small.lower_bound > 0.001 and small.p_value <= 0.05
    for result in (big, small):
        low, high = result.interval
        assert low <= result.lower_bound <= result.observed_difference <= high
        assert set(result.metric_differences) == set(METRIC_NAMES)


def test_the_observed_difference_is_the_weighted_metric_difference() -> None:
    refs = references(50, 3)
    cand, champ = compute_stats((keep(r, 7), r) for r in refs), compute_stats((keep(r, 4), r) for r in refs)
    result = paired_bootstrap(cand, champ, DEFAULT_WEIGHTS, threshold=0.0, resamples=200)
    a, b = metrics_from_stats(cand), metrics_from_stats(champ)
    assert result.candidate_score == pytest.approx(
        sum(DEFAULT_WEIGHTS[m] * a[m] for m in METRIC_NAMES), abs=1e-15
    )
    assert result.observed_difference == pytest.approx(
        result.candidate_score - result.champion_score, abs=1e-15
    )
    assert result.metric_differences["bleu4"] == pytest.approx(a["bleu4"] - b["bleu4"], abs=1e-15)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    refs = references(40, 4)
    rng = random.Random(0)
    cand = compute_stats((keep(r, rng.randint(0, 10)), r) for r in refs)
    champ = compute_stats((keep(r, rng.randint(0, 10)), r) for r in refs)
    first = paired_bootstrap(cand, champ, DEFAULT_WEIGHTS, threshold=0.0, seed=7)
    assert paired_bootstrap(cand, champ, DEFAULT_WEIGHTS, threshold=0.0, seed=7) == first
    other = paired_bootstrap(cand, champ, DEFAULT_WEIGHTS, threshold=0.0, seed=8)
    assert other.interval != first.interval and other.observed_difference == first.observed_difference


@pytest.mark.parametrize("threshold", [-0.02, 0.0, 0.005, 0.01, 0.02, 0.05])
def test_significant_exactly_when_the_p_value_is_at_most_one_minus_confidence(threshold: float) -> None:
    refs = references(80, 5)
    rng = random.Random(1)
    cand = compute_stats((keep(r, rng.randint(3, 12)), r) for r in refs)
    champ = compute_stats((keep(r, rng.randint(2, 11)), r) for r in refs)
    for confidence in (0.8, 0.9, 0.95, 0.99):
        result = paired_bootstrap(cand, champ, DEFAULT_WEIGHTS, threshold=threshold, confidence=confidence)
        assert result.significant == (result.p_value <= 1 - confidence + 1e-12)
        assert 1 / 1001 <= result.p_value <= 1


def test_identical_systems_are_never_significant() -> None:
    stats = compute_stats((keep(r, 5), r) for r in references(30, 6))
    result = paired_bootstrap(stats, stats, DEFAULT_WEIGHTS, threshold=0.0)
    assert result.observed_difference == 0 and result.interval == (0.0, 0.0) and not result.significant
    assert result.p_value == 1.0


def test_different_references_are_incomparable() -> None:
    refs = references(20, 7)
    cand = compute_stats((keep(r, 5), r) for r in refs)
    other_refs = compute_stats((keep(r, 5), r) for r in [*refs[:-1], "something else entirely"])
    with pytest.raises(IncomparableError, match="different references"):
        paired_bootstrap(cand, other_refs, DEFAULT_WEIGHTS, threshold=0.0)
    with pytest.raises(IncomparableError, match="20 examples, the champion on 19"):
        paired_bootstrap(
            cand, compute_stats((keep(r, 5), r) for r in refs[:-1]), DEFAULT_WEIGHTS, threshold=0.0
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resamples": 10}, "too few"),
        ({"confidence": 1.0}, "confidence"),
        ({"weights": {"bleu9": 1.0}}, "bleu9"),
        ({"weights": {"bleu1": math.nan}}, "finite"),
    ],
)
def test_bad_bootstrap_settings_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    stats = compute_stats([("a b c", "a b c d")] * 5)
    arguments: dict[str, object] = {"weights": DEFAULT_WEIGHTS, "threshold": 0.0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        paired_bootstrap(stats, stats, **arguments)  # type: ignore[arg-type]


# --- reading predictions -----------------------------------------------------------------------------


def test_jsonl_predictions_with_aliases() -> None:
    text = (
        '{"Generated": "the cat", "expected": "the cat sat", "id": 1}\n\n{"generated": "", "expected": "x"}\n'
    )
    parsed = parse_predictions(text, fmt="jsonl", source="preds.jsonl")
    assert parsed.pairs == (("the cat", "the cat sat"), ("", "x"))
    assert (parsed.prediction_field, parsed.reference_field) == ("Generated", "expected")
    assert "prediction from 'Generated', reference from 'expected'" in parsed.notes[0]
    assert read_predictions(text, fmt="jsonl", source="preds.jsonl") == list(parsed.pairs)


def test_csv_predictions_with_quoted_commas_and_newlines() -> None:
    text = '\ufeffid,output,answer\n1,"a, b","line one\nline two"\n2,"",c\n'
    parsed = parse_predictions(text, fmt="csv", source="preds.csv")
    assert parsed.pairs == (("a, b", "line one\nline two"), ("", "c"))
    assert (parsed.prediction_field, parsed.reference_field) == ("output", "answer")


BAD_PREDICTIONS = [
    ("jsonl", "", "preds:", "is empty"),
    ("jsonl", "\n  \n", "preds:", "is empty"),
    ("jsonl", '{"prediction": "a", "reference": "b"}\n{"prediction": "a",', "preds:2:", "not valid JSON"),
    ("jsonl", '["a", "b"]', "preds:1:", "expected a JSON object, got list"),
    ("jsonl", '{"text": "a", "reference": "b"}', "preds:1:", "no prediction field among"),
    ("jsonl", '{"prediction": "a", "ref": "b"}', "preds:1:", "no reference field"),
    (
        "jsonl",
        '{"prediction": "a", "reference": "b"}\n\n{"prediction": "a"}',
        "preds:3:",
        "missing the 'reference' field",
    ),
    (
        "jsonl",
        '{"prediction": 42, "reference": "b"}',
        "preds:1:",
        "'prediction' must be a string, got int 42",
    ),
    ("jsonl", '{"prediction": "a", "reference": ["b", "c"]}', "preds:1:", "must be a string, got list"),
    ("jsonl", '{"prediction": null, "reference": "b"}', "preds:1:", "got NoneType None"),
    ("csv", "", "preds:", "is empty"),
    ("csv", "text,reference\na,b\n", "preds:1:", "has no prediction column"),
    ("csv", "prediction,gold_label\na,b\n", "preds:1:", "has no reference column"),
    ("csv", "prediction,reference\n", "preds:", "no examples"),
    ("csv", "prediction,reference\na,b\nc\n", "preds:3:", "1 fields where the header has 2"),
    ("csv", "prediction,reference\na,b,c\n", "preds:2:", "3 fields where the header has 2"),
    ("csv", 'prediction,reference\na,b\n"c,d\n', "preds:", "not valid CSV"),
]


@pytest.mark.parametrize(("fmt", "text", "where", "message"), BAD_PREDICTIONS)
def test_every_malformed_predictions_file_is_a_one_line_metrics_error(
    fmt: str, text: str, where: str, message: str
) -> None:
    with pytest.raises(MetricsError, match=message) as info:
        read_predictions(text, fmt=fmt, source="preds")  # type: ignore[arg-type]
    text_of_error = str(info.value)
    assert text_of_error.startswith(where) and "\n" not in text_of_error
    assert ";" in text_of_error  # what is wrong; then the fix


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'tsv'"):
        read_predictions("a\tb", fmt="tsv", source="preds")  # type: ignore[arg-type]


# --- values and imports ---------------------------------------------------------------------------------


def test_stats_validate_themselves() -> None:
    with pytest.raises(MetricsError, match="no examples"):
        compute_stats([])
    good = compute_stats([("a b", "a b")])
    with pytest.raises(MetricsError, match="inconsistent"):
        ExampleStats(
            ((3,), (0,), (0,), (0,)),
            good.hypothesis_lengths,
            good.reference_lengths,
            good.lcs_lengths,
            good.prediction_tokens,
            good.references_sha256,
        )


def test_importing_evaluation_imports_neither_numpy_nor_the_references() -> None:
    code = (
        "import sys, deploygate.core.evaluation\n"
        "print([m for m in ('numpy', 'nltk', 'rouge_score', 'sacrebleu') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
