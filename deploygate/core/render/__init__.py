"""Rendering, still pure: values in, Markdown / card text out (one Markdown escaper, sandboxed Jinja)."""
