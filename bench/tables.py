"""Benchmark output: rows as a Markdown table, columns padded to line up."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` (the first is the head) as a Markdown table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def median_range(values: Sequence[float]) -> str:
    """``values`` as a table cell: the median and (min-max); "-" for none."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the nearest rank at or above it); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
