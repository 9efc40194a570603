"""Metrics from predictions and the paired bootstrap in the gate, against a real MLflow server:
a larger but noisy gain is not significant (no deploy), a smaller consistent one is (deploy)."""

from __future__ import annotations

import json
import random

import pytest

from tests.gatekit import run_gate, write_json

pytestmark = pytest.mark.slow

VOCAB = [f"w{i}" for i in range(60)]


def _refs() -> list[str]:
    rng = random.Random(1)
    return [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(8, 16))) for _ in range(150)]


def _degrade(ref: str, p: float, seed: int) -> str:
    r = random.Random(seed)
    return " ".join(t if r.random() > p else r.choice(VOCAB) for t in ref.split())


REFS = _refs()
CHAMPION = [_degrade(x, 0.5, i) for i, x in enumerate(REFS)]
CONSISTENT = [_degrade(x, 0.48, i) for i, x in enumerate(REFS)]  # a little better everywhere: +0.018
NOISY = [
    x if i < 15 else _degrade(x, 0.58, i) for i, x in enumerate(REFS)
]  # 15 perfect, the rest worse: +0.029


def jsonl(tmp_path, name, preds, refs=REFS):
    path = tmp_path / f"{name}.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prediction": p, "reference": r}) + "\n" for p, r in zip(preds, refs, strict=True)
        )
    )
    return path


@pytest.fixture
def gate(tmp_path, capsys, mlflow_server, registry_name, experiment_name, monkeypatch):
    def _run(name, sha, preds_path, extra=()):
        monkeypatch.setenv("GITHUB_SHA", sha * 40)
        return run_gate(
            tmp_path,
            capsys,
            uri=mlflow_server.uri,
            registry=registry_name,
            experiment=experiment_name,
            name=name,
            extra=["--predictions", str(preds_path), *extra],
        )

    return _run


def test_noisy_gain_is_not_significant_consistent_one_is(gate, tmp_path):
    first = gate("champ", "1", jsonl(tmp_path, "champ", CHAMPION))
    assert first.code == 0, first.err
    assert first.info()["deployed"]
    assert any("150 examples" in line for line in first.err.splitlines())

    noisy = gate("noisy", "2", jsonl(tmp_path, "noisy", NOISY))
    assert noisy.code == 0, noisy.err
    info, sig = noisy.info(), noisy.comparison()["checks"]["significance"]
    assert info["improvement"] > 0.02  # a bigger point gain than the consistent candidate's...
    assert (info["decision"], info["rule"]) == ("skip", "not-significant")  # ...but noise
    assert not sig["significant"] and sig["p_value"] > 0.05 and sig["resamples"] == 1000
    assert sig["lower_bound"] < 0.001 < sig["interval"][1]

    consistent = gate("consistent", "3", jsonl(tmp_path, "consistent", CONSISTENT))
    assert consistent.code == 0, consistent.err
    info, sig = consistent.info(), consistent.comparison()["checks"]["significance"]
    assert 0.001 < info["improvement"] < noisy.info()["improvement"]
    assert (info["decision"], info["rule"]) == ("deploy", "improved") and info["deployed"]
    assert sig["significant"] and sig["lower_bound"] > 0.001 and sig["p_value"] <= 0.05
    assert "significant at 95%" in info["reason"]


def test_other_references_refuse_to_compare(gate, tmp_path):
    assert gate("champ", "1", jsonl(tmp_path, "champ", CHAMPION)).code == 0
    other_refs = [r + " extra" for r in REFS]
    res = gate("other", "2", jsonl(tmp_path, "other", CONSISTENT, other_refs))
    assert res.code == 2 and "evaluation references" in res.err


def test_point_rule_without_champion_statistics(
    gate, tmp_path, capsys, mlflow_server, registry_name, experiment_name, monkeypatch
):
    monkeypatch.setenv("GITHUB_SHA", "0" * 40)
    from deploygate.core.evaluation import compute_stats, metrics_from_stats

    base = metrics_from_stats(compute_stats(zip(CHAMPION, REFS, strict=True)))
    first = run_gate(
        tmp_path,
        capsys,
        uri=mlflow_server.uri,
        registry=registry_name,
        experiment=experiment_name,
        name="json",
        metrics=base,
    )
    assert first.code == 0
    res = gate("preds", "5", jsonl(tmp_path, "consistent", CONSISTENT))
    assert res.code == 0 and res.info()["rule"] == "improved"
    assert res.comparison()["checks"]["significance"] is None
    assert "point rule" in (res.output_dir / "deployment_logs.txt").read_text()


def test_bad_predictions_file(gate, tmp_path):
    bad = write_json(tmp_path / "bad.jsonl", '{"prediction": "a b", "reference": "a b"}\n{"prediction": 3}\n')
    res = gate("bad", "6", bad)
    assert res.code == 2 and "bad.jsonl:2" in res.err
    wrong_suffix = write_json(tmp_path / "preds.txt", "x")
    assert gate("bad2", "7", wrong_suffix).code == 2
