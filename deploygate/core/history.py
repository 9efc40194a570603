"""The promotion history of a registered model, read as a stack: who was champion before whom.

Pure. Each promotion pushes a version; a rollback entry (`rollback_from`) pops back to its target,
so rolling back twice goes to the champion before the previous one, never forward again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def champion_stack(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Versions that were champion, oldest first, with rolled-back ones removed."""
    stack: list[str] = []
    for entry in entries:
        version = str(entry.get("version", ""))
        if not version:
            continue
        if entry.get("rollback_from") is not None and version in stack:
            del stack[len(stack) - stack[::-1].index(version) :]  # pop everything above the target
            continue
        if stack and stack[-1] == version:
            continue  # a re-run that promoted the same version again
        stack.append(version)
    return stack


def previous_champion(entries: Sequence[Mapping[str, Any]], current: str) -> str | None:
    """The version to roll back to from `current`, or None when the history has no earlier one."""
    stack = champion_stack(entries)
    if current in stack:
        below = stack[: len(stack) - 1 - stack[::-1].index(current)]
        return below[-1] if below else None
    return stack[-1] if stack else None
