"""Generated reference text for docs/reference.md, so the docs cannot drift from the settings table.

`python -m deploygate.shells.docs` prints the blocks; `--write docs/reference.md` replaces them between their
`<!-- name:start -->` / `<!-- name:end -->` markers. tests/unit/test_docs.py fails when they differ.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from deploygate.core.settings import SETTINGS


def _default(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else ""
    return f"`{value}`"


def settings_table() -> str:
    rows = ["| flag / input | params.yaml | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        params = ", ".join(f"`{'.'.join(p)}`" for p in s.params)
        rows.append(f"| `--{s.name}` | {params} | {_default(s.default)} | {s.help.replace('|', '/')} |")
    return "\n".join(rows)


def action_inputs() -> str:
    from deploygate.shells.action import inputs_markdown

    return inputs_markdown().rstrip("\n")


def action_outputs() -> str:
    from deploygate.shells.action import outputs_markdown

    return outputs_markdown().rstrip("\n")


BLOCKS = {"settings": settings_table, "action-inputs": action_inputs, "action-outputs": action_outputs}


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + body + "\n" + m.group(2)


def render_blocks(text: str) -> str:
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(_replacement(fn()), text)
    return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        path = Path(argv[1])
        path.write_text(render_blocks(path.read_text()))
        return 0
    for name, fn in BLOCKS.items():
        print(f"<!-- {name}:start -->\n{fn()}\n<!-- {name}:end -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
