"""The one Markdown escaper: every value that did not come from deploygate's own text passes
through here before it lands in a step summary, a PR comment or a model card.

Pure. `md` for inline text, `code` for inline code on GitHub (HTML, safe in tables), `code_span`
for inline code in the model card (a Markdown span, as the Hub and editors show it), `link` for a
web link; all fold newlines, so a value can never start a new block (a heading, a row, a fence).
"""

from __future__ import annotations

import html
import re
import urllib.parse

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~>!])")


def md(value: object) -> str:
    """Inline Markdown text: HTML-escaped, Markdown punctuation and table pipes backslashed,
    newlines folded, @mentions defused (a reason must not ping anyone)."""
    text = " ".join(str(value).split())
    text = html.escape(text, quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("@", "&#64;")


def code(value: object) -> str:
    """Inline code that survives backticks and pipes: `<code>` with the text HTML-escaped."""
    text = " ".join(str(value).split())
    return "<code>" + html.escape(text, quote=True).replace("|", "&#124;") + "</code>"


def code_span(value: object) -> str:
    """Inline code as a Markdown code span, for text read beyond GitHub (the model card): one line,
    backticks turned to `'` (a span shows its content literally, so nothing else needs escaping; the
    card's tables hold no code)."""
    return "`" + " ".join(str(value).replace("`", "'").split()) + "`"


def web_url(url: str | None) -> str | None:
    """`url` made safe inside `[...](...)` when it is an http(s) URL with a host, else None."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    safe = urllib.parse.quote(url.strip(), safe=":/?#@!$&'*+,;=%~-._")
    return safe.replace("(", "%28").replace(")", "%29")


def link(text: str, url: str | None) -> str:
    """`[text](url)` for http(s) URLs (escaped so `)` or spaces cannot end it early), else the text."""
    label = md(text)
    safe = web_url(url)
    return f"[{label}]({safe})" if safe else label
