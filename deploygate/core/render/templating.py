"""The one Jinja2 environment builder, for every template deploygate renders.

A user's card template comes from the repository, so a pull request can change it, and it is
rendered on pull request runs too. Every template therefore runs sandboxed
(`jinja2.sandbox.ImmutableSandboxedEnvironment`): no attribute starting with `_` (so no
`lipsum.__globals__['os']`, no `cycler.__init__.__globals__`), no calls to unsafe methods, no
mutating the values it is given, `range()` bounded, and `*` / `**` refused when they would build
a huge value. Templates see only the values the caller passes (never the environment, the config
or a client), with StrictUndefined so that a missing value fails loudly.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# `'x' * 10**9` or `9 ** 9 ** 9` in a template would take the gate's memory or CPU
MAX_REPEAT = 1_000_000
MAX_EXPONENT = 1_000


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent above {MAX_EXPONENT} is not allowed in a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_REPEAT
                ):
                    raise SecurityError(f"a value over {MAX_REPEAT} items is not allowed in a template")
        return super().call_binop(context, operator, left, right)


def environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    """A sandboxed environment for Markdown templates (no HTML autoescape: callers escape values)."""
    return _Sandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
