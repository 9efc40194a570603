"""JSON as deploygate reads the user's files: a key given twice or an integer too long to read is an
error, never silently resolved (the last `"r"` of an adapter config winning, a 5,000-digit number
raising Python's int-string ValueError from deep inside `json`).

Pure: text in, values out. Callers turn the errors (ValueErrors, so existing `except ValueError`
still catches them) into their own one-line InputError naming the file.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from deploygate.core.errors import shown


class DuplicateKeyError(ValueError):
    """An object names the same key twice."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key {shown(key)} appears twice in one object; keep one")


class NumberTooLongError(ValueError):
    """An integer literal longer than Python converts (4,300 digits by default)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits
        super().__init__(f"an integer of {digits} digits is too long to be a number; write a real value")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def _int(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise NumberTooLongError(digits)
    return int(text)


def loads(text: str) -> Any:
    """`json.loads` that refuses duplicate keys and integers too long to read (NaN and Infinity
    literals still parse to floats: the value checks refuse them with their own message)."""
    return json.loads(text, object_pairs_hook=_unique, parse_int=_int)
