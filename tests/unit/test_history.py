"""Rollback targets from the promotion history (a stack; rollbacks pop)."""

from __future__ import annotations

import pytest

from deploygate.core.history import champion_stack, previous_champion


def p(v, **kw):
    return {"version": v, **kw}


CASES = [
    ("empty history", [], "1", None),
    ("only one champion", [p("1")], "1", None),
    ("previous of latest", [p("1"), p("2"), p("3")], "3", "2"),
    ("after one rollback, the one before", [p("1"), p("2"), p("3"), p("2", rollback_from="3")], "2", "1"),
    ("re-promotion of the same version is one entry", [p("1"), p("2"), p("2")], "2", "1"),
    ("new deploy after rollback", [p("1"), p("2"), p("1", rollback_from="2"), p("4")], "4", "1"),
    ("current not in history (promoted by hand)", [p("1"), p("2")], "7", "2"),
    (
        "rollback to --to version deep in the stack",
        [p("1"), p("2"), p("3"), p("1", rollback_from="3")],
        "1",
        None,
    ),
]


@pytest.mark.parametrize(
    ("entries", "current", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_previous_champion(entries, current, expected):
    assert previous_champion(entries, current) == expected


def test_stack_ignores_malformed_entries():
    assert champion_stack([{"score": 1}, p("1"), {"version": ""}, p("2")]) == ["1", "2"]
