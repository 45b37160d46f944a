"""What the commands print: the run summary, status and stats."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from newsq.ledger import Ledger
from newsq.records import STATES
from newsq.store import Store


def summary_data(store: Store, urls: list[str], ledger: Ledger, seconds: float,
                 invalid: int = 0, known: int = 0) -> dict[str, Any]:  # fmt: skip
    """The counts of one run over its own URLs."""
    states: dict[str, int] = dict.fromkeys(STATES, 0)
    reasons: dict[str, int] = {}
    for url, state in zip(urls, ledger.states(urls), strict=True):
        states[state or "queued"] += 1
        if state in ("failed", "skipped"):
            record = ledger.get(url) or {}
            key = f"{state}:{record.get('reason', '?')}"
            reasons[key] = reasons.get(key, 0) + 1
    done = states["stored"] + states["duplicate"]
    return {
        "urls_in": len(urls) + invalid,
        "already_known": known,
        "states": states,
        "reasons": reasons,
        "invalid": invalid,
        "stories": store.article_counts()["stories"],
        "seconds": round(seconds, 2),
        "articles_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
    }


def print_summary(data: Mapping[str, Any], stories: list[dict[str, Any]],
                  console: Console) -> None:  # fmt: skip
    states = data["states"]
    table = Table(title="newsq run", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("URLs in", str(data["urls_in"]))
    if data["already_known"]:
        table.add_row("already known (not fetched again)", str(data["already_known"]))
    table.add_row("stored (unique articles)", str(states["stored"]))
    table.add_row("duplicates", str(states["duplicate"]))
    table.add_row("skipped", str(states["skipped"]))
    table.add_row("failed", str(states["failed"] + data["invalid"]))
    unfinished = sum(states[s] for s in ("queued", "fetching", "fetched"))
    if unfinished:
        table.add_row("[red]not finished[/red]", str(unfinished))
    table.add_row("time", f"{data['seconds']:.1f} s")
    table.add_row("articles/s", f"{data['articles_per_s']:.1f}")
    console.print(table)
    if data["reasons"]:
        console.print("skipped and failed by reason: " + ", ".join(
            f"{k} {v}" for k, v in sorted(data["reasons"].items())))  # fmt: skip
    multi = [s for s in stories if s["copies"] > 1]
    if multi:
        grouped = Table(title="stories carried by more than one URL")
        grouped.add_column("copies", justify="right")
        grouped.add_column("title", overflow="ellipsis", max_width=60)
        grouped.add_column("outlets", overflow="fold")
        for story in multi:
            grouped.add_row(
                str(story["copies"]), story["title"] or "?", ", ".join(story["outlets"])
            )
        console.print(grouped)


def stats_table(ledger: Ledger, store: Store, queue_depths: Mapping[str, int]) -> Table:
    table = Table(title="newsq stats")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, depth in queue_depths.items():
        table.add_row(f"queue {name}", str(depth))
    counts = ledger.counts()
    for state in STATES:
        table.add_row(f"urls {state}", str(counts[state]))
    articles = store.article_counts()
    done = counts["stored"] + counts["duplicate"]
    ratio = counts["duplicate"] / done if done else 0.0
    table.add_row("stories", str(articles["stories"]))
    table.add_row("dedup ratio", f"{ratio:.1%}")
    for reason, n in sorted(ledger.reasons().items()):
        table.add_row(f"  {reason}", str(n))
    return table
