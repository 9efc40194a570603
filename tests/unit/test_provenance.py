"""What a Hub tag was made for: the record's round trip and when two versions are the same one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from deploygate.core.provenance import (
    VersionIdentity,
    baseline_json,
    mismatch,
    parse_baseline,
    parse_record,
    record_text,
)

V1 = VersionIdentity(
    registry_name="qa",
    version="1",
    created_ms=1_767_225_600_123,
    candidate_key="c" * 32,
    gate_run_id="r" * 32,
    tracking_server="https://mlflow.example",
)


def test_the_record_round_trips_and_lists_the_files() -> None:
    text = record_text(V1, {"b.json": "2" * 64, "a.safetensors": "1" * 64})
    assert parse_record(text) == V1
    data = json.loads(text)
    assert (
        list(data["files"]) == ["a.safetensors", "b.json"]
        and data["registry"]["created"] == "2026-01-01T00:00:00.123000Z"
    )
    assert record_text(V1, {"a": "1"}) == record_text(V1, {"a": "1"})  # the same bytes every time


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({}, []),
        ({"registry_name": "qa-renamed"}, []),  # renamed in MLflow: still the same version
        ({"tracking_server": "https://new.example"}, []),  # the same server behind a new address
        ({"created_ms": 1}, ["registration time"]),  # deleted and recreated
        ({"version": "2"}, ["version 2 vs 1"]),
        ({"candidate_key": "d" * 32, "gate_run_id": "s" * 32}, ["candidate key", "gate run"]),
        ({"created_ms": None}, []),  # a field one side does not know is not compared
    ],
)
def test_when_a_tag_was_made_for_this_version(change: dict[str, object], differs: list[str]) -> None:
    assert mismatch(V1, replace(V1, **change)) == differs  # type: ignore[arg-type]


def test_an_identity_with_nothing_to_compare_never_matches() -> None:
    bare = replace(V1, created_ms=None, candidate_key=None, gate_run_id=None)
    assert mismatch(bare, V1) == ["nothing recorded on this version to compare"]


@pytest.mark.parametrize(
    "text", [None, "", "[]", '{"format": 2, "registry": {"version": "1"}}', "{bad", '{"format": 1}']
)
def test_anything_else_is_no_record(text: str | None) -> None:
    assert parse_record(text) is None


def test_the_baseline_tag_fits_and_round_trips() -> None:
    assert parse_baseline(None) == (False, None) and parse_baseline("none") == (True, None)
    recorded, base = parse_baseline(baseline_json("3", 0.25, {"bleu4": 0.1}, limit=5000))
    assert (
        recorded
        and base is not None
        and (base.version, base.weighted_score, dict(base.metrics)) == ("3", 0.25, {"bleu4": 0.1})
    )
    many = {f"metric_{i}": 0.5 for i in range(500)}
    assert len(baseline_json("3", 0.25, many, limit=5000)) <= 5000
