"""Plain-text tables that are also valid markdown: how the CLI prints metrics and benchmark rows."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np


def _cell(value) -> tuple[str, bool]:
    """The text of one table cell and whether it is numeric (right-aligned)."""
    if value is None:
        return "-", True
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (Integral, np.integer)):
        return str(int(value)), True
    if isinstance(value, (Real, np.floating)):
        text = f"{float(value):.3f}"
        return ("0.000" if text == "-0.000" else text), True
    return str(value).replace("|", "\\|").replace("\n", " "), False


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Render metric dicts as an aligned plain-text table that is also valid markdown.

    Floats get 3 decimals, None (or a missing key) '-'; numeric columns are right-aligned.
    """
    columns = [str(c) for c in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths, right = [], []
    for j, name in enumerate(columns):
        col = [r[j] for r in cells]
        widths.append(max([3, len(name), *(len(text) for text, _ in col)]))
        # right-align a column whose filled cells are all numbers
        right.append(bool(col) and all(num for _, num in col) and any(text != "-" for text, _ in col))

    def line(texts: list[str]) -> str:
        parts = [t.rjust(w) if r else t.ljust(w) for t, w, r in zip(texts, widths, right, strict=False)]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in zip(widths, right, strict=False))
        + "|"
    )
    out = [line(columns), sep]
    out += [line([text for text, _ in r]) for r in cells]
    return "\n".join(out)
