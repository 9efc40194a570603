"""Metric signatures: how a score was measured, so that two scores are only compared when they
mean the same thing (same implementation, tokenisation, smoothing, scale, weights, references).

Pure. A signature travels as compact JSON in a version tag / run tag. Fields a side does not know
(`None`, e.g. a pre-computed metrics.json says nothing of its tokenisation) are not compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from deploygate.core.errors import IncomparableError

SIGNATURE_VERSION = 1


@dataclass(frozen=True)
class MetricSignature:
    implementation: str | None  # e.g. "deploygate-seed/1 (nltk corpus_bleu + rouge_score rougeL)"
    tokenisation: str | None  # e.g. "lower+whitespace; rougeL: rouge_score+porter"
    smoothing: str | None  # "none" for the seed's BLEU
    scale: float
    weights: tuple[tuple[str, float], ...]
    references_sha256: str | None = None
    examples: int | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["weights"] = {k: round(v, 12) for k, v in self.weights}
        data["v"] = SIGNATURE_VERSION
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MetricSignature | None:
        """None when the text is not a signature (an old or hand-made tag): treated as unknown."""
        try:
            data = json.loads(text)
            weights = tuple(sorted((str(k), float(v)) for k, v in data["weights"].items()))
            return cls(
                implementation=data.get("implementation"),
                tokenisation=data.get("tokenisation"),
                smoothing=data.get("smoothing"),
                scale=float(data["scale"]),
                weights=weights,
                references_sha256=data.get("references_sha256"),
                examples=data.get("examples"),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def describe(self) -> str:
        parts = [self.implementation or "pre-computed metrics", f"scale {self.scale:g}"]
        if self.references_sha256:
            parts.append(f"refs {self.references_sha256[:12]}")
        return ", ".join(parts)


def signature_for(
    weights: Mapping[str, float],
    scale: float,
    *,
    implementation: str | None = None,
    tokenisation: str | None = None,
    smoothing: str | None = None,
    references_sha256: str | None = None,
    examples: int | None = None,
) -> MetricSignature:
    return MetricSignature(
        implementation=implementation,
        tokenisation=tokenisation,
        smoothing=smoothing,
        scale=scale,
        weights=tuple(sorted((k, round(float(v), 12)) for k, v in weights.items())),
        references_sha256=references_sha256,
        examples=examples,
    )


def _weights_text(weights: tuple[tuple[str, float], ...]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in weights)


def differences(candidate: MetricSignature, champion: MetricSignature) -> list[str]:
    """What differs between two signatures, in words; fields unknown on either side are skipped."""
    out: list[str] = []
    if dict(candidate.weights) != dict(champion.weights):
        out.append(
            f"weights {_weights_text(candidate.weights)} vs champion {_weights_text(champion.weights)}"
        )
    if candidate.scale != champion.scale:
        out.append(f"scale {candidate.scale:g} vs champion {champion.scale:g}")
    for field in ("implementation", "tokenisation", "smoothing", "references_sha256"):
        a, b = getattr(candidate, field), getattr(champion, field)
        if a is not None and b is not None and a != b:
            label = "evaluation references" if field == "references_sha256" else field
            out.append(f"{label} {str(a)[:16]} vs champion {str(b)[:16]}")
    return out


def check_comparable(
    candidate: MetricSignature, champion: MetricSignature | None, *, allow: bool
) -> tuple[str, list[str]]:
    """('same' | 'unknown' | 'allowed', differences); raises IncomparableError unless allowed."""
    if champion is None:
        return "unknown", []
    diffs = differences(candidate, champion)
    if not diffs:
        return "same", []
    if allow:
        return "allowed", diffs
    raise IncomparableError(
        "the candidate and the champion were scored differently (" + "; ".join(diffs) + "); "
        "re-evaluate both the same way, or set allow-incomparable to decide anyway"
    )
