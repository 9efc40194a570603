"""No function in deploygate/ is longer than a reader can follow: 60 lines, docstring included.

Read with ast (nothing is imported). The checker is tried on a made-up module first, so that it cannot
pass by finding nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "deploygate"
LIMIT = 60


def long_functions(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > LIMIT:
                found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_the_checker_finds_a_long_function_and_passes_a_short_one() -> None:
    long_body = "\n".join(f"        x{i} = {i}" for i in range(LIMIT))
    source = f"def short():\n    return 1\n\n\nclass C:\n    def long(self):\n{long_body}\n"
    assert long_functions(source, "m.py") == [f"m.py:6 long ({LIMIT + 1} lines)"]


def test_no_function_in_the_package_is_over_the_limit() -> None:
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        for hit in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    ]
    assert found == [], f"split these (limit {LIMIT} lines): {found}"
