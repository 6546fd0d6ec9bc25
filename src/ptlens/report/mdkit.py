"""Markdown primitives shared by report.md's page and its mechanism section: escaping, fences, tables.

Strings from results and samples are escaped: inline cells lose their Markdown and HTML meaning, and model
responses sit in fenced code blocks longer than any backtick run they contain.
"""

from __future__ import annotations

import re

_MD_ALWAYS = re.compile(r"([\\`*|<~])")
"""Characters that start Markdown syntax anywhere inline: code, emphasis, table cells, raw HTML and autolinks,
strikethrough. ``(``, ``)``, ``!``, ``#``, ``+``, ``>`` mean nothing inside a line that the text does not start."""
_LINK_CLOSE = re.compile(r"\](?=[(\[:])")
"""A link or image needs ``](``, ``][`` (or a definition ``]:``); a bare ``[0.4, 0.6]`` is text."""
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
"""``_`` emphasises only at a word's edge (``rel_change`` stays as written)."""
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def esc(text) -> str:
    """A string that renders as itself inside a Markdown paragraph or table cell (no HTML, no Markdown syntax, one
    line), escaping only what Markdown would read, so report.md stays readable as text."""
    s = _MD_ALWAYS.sub(r"\\\1", str(text))
    s = _LINK_CLOSE.sub(r"\\]", s)
    s = _EDGE_UNDERSCORE.sub(r"\\_", s)
    s = _ENTITY.sub(r"\\&", s)
    return " ".join(s.split())


def fence(text: str, info: str = "text") -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    f = "`" * max(3, longest + 1)
    return f"{f}{info}\n{text}\n{f}"


def _cell(c) -> str:
    return esc(c) if isinstance(c, str) else f"{esc(c[0])} {esc(c[1])}"


def md_table(t: dict) -> list[str]:
    out = [f"**{esc(t['caption'])}**", ""]
    out.append("| " + " | ".join(esc(h) for h in t["header"]) + " |")
    out.append("|" + "---|" * len(t["header"]))
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t["rows"]]
    if t.get("note"):
        out += ["", f"_{esc(t['note'])}_"]
    return out + [""]
