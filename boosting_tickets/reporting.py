"""Rendering results as tables (Markdown, CSV, LaTeX) for the console and for files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt_cell(value: Any, *, pct: bool = False, digits: int = 2) -> str:
    """One table cell: None -> '–', fractions as percentages when ``pct``."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.{digits}f}" if pct else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table with columns padded for reading in a terminal."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])
