"""What the commands print: the run summary, status and stats."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.columns import Columns
from rich.console import Console, Group
from rich.table import Table

from newsq.ledger import Ledger
from newsq.records import STATES
from newsq.store.database import Store

if TYPE_CHECKING:
    from newsq.workers.stats import Snapshot


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


def _pairs(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None,
                  pad_edge=False)  # fmt: skip
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def stats_view(snap: Snapshot) -> Group:
    """The ``newsq stats`` screen: queues and rates, states, failures, stories."""
    rates = snap.rates
    flow = _pairs("pipeline", [
        *((f"queue {name}", str(depth)) for name, depth in snap.queues.items()),
        ("articles/s (last min)", f"{rates['articles']:.1f}"),
        ("URLs done/s (last min)", f"{rates['urls']:.1f}"),
        ("failed/s (last min)", f"{rates['failed']:.1f}"),
        ("dedup ratio", f"{snap.dedup_ratio:.1%}"),
    ])  # fmt: skip
    states = _pairs("URLs by state", [(state, str(snap.states[state])) for state in STATES])
    parts: list[Any] = [Columns([flow, states], padding=(0, 4))]
    if snap.reasons:
        by_reason = sorted(snap.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        hosts = [(host, str(n)) for host, n in snap.failing_hosts]
        parts.append(Columns([_pairs("skipped and failed by reason",
                                     [(k, str(v)) for k, v in by_reason]),
                              _pairs("top failing hosts (recent)", hosts)],
                             padding=(0, 4)))  # fmt: skip
    if snap.stories:
        stories = Table(title="biggest stories", title_justify="left", box=None)
        stories.add_column("copies", justify="right")
        stories.add_column("title", overflow="ellipsis", max_width=60, no_wrap=True)
        stories.add_column("outlets", overflow="ellipsis", max_width=40, no_wrap=True)
        for story in snap.stories:
            stories.add_row(str(story["copies"]), story["title"] or "?",
                            ", ".join(story["outlets"]))  # fmt: skip
        parts.append(stories)
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    return Group(f"[bold]newsq stats[/bold]  {stamp}", *parts)
