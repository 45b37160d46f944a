"""What the commands print: the run summary, status and stats."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.columns import Columns
from rich.console import Console, Group
from rich.table import Table

from newsq.ledger import Ledger
from newsq.records import STATES, TERMINAL
from newsq.store.database import Store

if TYPE_CHECKING:
    from newsq.backfill.progress import JobView
    from newsq.store.cursors import Cursor
    from newsq.workers.stats import SharedStory, Snapshot

STORY_ROWS = 20
"""Rows of the run summary's table of stories; the rest are counted below it."""


def summary_data(store: Store, urls: list[str], ledger: Ledger, seconds: float,
                 invalid: int = 0, known: int = 0) -> dict[str, Any]:  # fmt: skip
    """The counts of one run over its own URLs: a URL's outcome from the store (which
    records it before the ledger does), unless the ledger still has it in flight (a URL
    sent again after an outcome of before); only those in flight are read from Redis
    one by one (none when the run ended)."""
    states: dict[str, int] = dict.fromkeys(STATES, 0)
    reasons: dict[str, int] = {}
    ended = store.outcomes(urls)
    active = ledger.active_at([ledger.key(url) for url in urls])
    rest = [url for url, live in zip(urls, active, strict=True) if live or url not in ended]
    for url, got in zip(rest, ledger.states(rest), strict=True):
        reason = (ledger.get(url) or {}).get("reason") if got in TERMINAL else None
        ended[url] = (got or "queued", reason)
    for url in urls:
        state, reason = ended[url]
        states[state] += 1
        if state in ("failed", "skipped"):
            key = f"{state}:{reason or '?'}"
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


def reason_label(key: str) -> str:
    """``skipped:no_content`` → ``skipped, no content``: a ledger reason key, readable."""
    state, _, code = key.partition(":")
    return f"{state}, {code.replace('_', ' ')}" if code else state


def clock(seconds: float) -> str:
    """``H:MM:SS``, however long (``27:46:40``): the one way a time left is written."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def print_summary(data: Mapping[str, Any], stories: tuple[list[SharedStory], int],
                  console: Console) -> None:  # fmt: skip
    """The run summary: counts, reasons, and the stories more than one URL carried
    (``stories``: the rows to show and how many such stories there are in all)."""
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
        console.print(reasons_table(data["reasons"]))
    rows, total = stories
    if rows:
        console.print(stories_table(rows, "stories carried by more than one URL"))
        if total > len(rows):
            console.print(f"... and {total - len(rows)} more stories carried by more than one "
                          "URL (newsq export --all)")  # fmt: skip


def reasons_table(reasons: Mapping[str, int]) -> Table:
    """Skipped and failed URLs by reason, most first."""
    by_count = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return _pairs("skipped and failed, by reason", [(reason_label(k), str(v)) for k, v in by_count])


def stories_table(stories: list[SharedStory], title: str) -> Table:
    """One row per story: its copies (one per URL), and the outlets they came from
    (``×2``: two copies from that outlet), so that the outlets add up to the copies."""
    caption = "copies: URLs that carried the story (×N: N from that outlet)"
    table = Table(title=title, title_justify="left", caption_justify="left",
                  caption=caption)  # fmt: skip
    table.add_column("copies", justify="right", no_wrap=True, min_width=6)
    table.add_column("title", overflow="fold", ratio=3)
    table.add_column("outlets", overflow="fold", ratio=2)
    for story in stories:
        outlets = ", ".join(name if n == 1 else f"{name} ×{n}" for name, n in story.outlets)
        table.add_row(str(story.copies), story.title or "?", outlets)
    return table


BACKFILL_COLUMNS = ("ranges", "read", "stored", "duplicates", "known", "held", "skipped",
                    "failed", "rate")  # fmt: skip
BACKFILL_CAPTION = (
    "known: URLs met before; held: pages put off to learn their site's template "
    "(outcome in the ledger); rate: records/s of its latest run"
)


def backfill_table(jobs: list[JobView]) -> Table:
    """One row per ``newsq backfill`` job, newest first: its records by outcome."""
    table = Table(title="backfill jobs", title_justify="left", caption_justify="left",
                  caption=BACKFILL_CAPTION)  # fmt: skip
    table.add_column("file", overflow="fold", ratio=2)
    for name in BACKFILL_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("skipped by reason", overflow="fold", ratio=2)
    for job in jobs:
        c = job.counts
        skipped = {k.partition(":")[2]: v for k, v in sorted(c.items()) if k.startswith("skipped:")}
        failed = sum(v for k, v in c.items() if k.startswith("failed:"))
        ranges = "done" if job.finished else f"{c.get('ranges_done', 0)} / {c.get('ranges', 0)}"
        counts = [c.get(k, 0) for k in ("records", "stored", "duplicate", "known", "held")]
        table.add_row(job.source.rsplit("/", 1)[-1], ranges, *map(str, counts),
                      str(sum(skipped.values())), str(failed), f"{job.rate:.1f}/s",
                      ", ".join(f"{k} {v}" for k, v in skipped.items()))  # fmt: skip
    return table


def _pairs(title: str, rows: Iterable[tuple[str, str]], caption: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None,
                  pad_edge=False, caption=caption, caption_justify="left")  # fmt: skip
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def stats_view(snap: Snapshot) -> Group:
    """The ``newsq stats`` screen: queues and rates, states, failures, stories."""
    rates = snap.rates
    flow = _pairs("pipeline", [
        *(row for name, lanes in snap.queues.items() for row in _queue_rows(snap, name, lanes)),
        ("URLs done/s (last min)", f"{rates['urls']:.1f}"),
        ("articles/s (last min)", f"{rates['articles']:.1f}"),
        ("failed/s (last min)", f"{rates['failed']:.1f}"),
        ("dedup ratio", f"{snap.dedup_ratio:.1%}"),
    ])  # fmt: skip
    states = _pairs("URLs by state (now)", [(state, str(snap.states[state])) for state in STATES])
    parts: list[Any] = [Columns([flow, states], padding=(0, 4))]
    if snap.throttle is not None:
        parts.append(throttle_line(snap))
    if snap.reasons:
        by_reason = sorted(snap.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        hosts = [(host, str(n)) for host, n in snap.failing_hosts]
        reasons = _pairs("URLs that ended skipped or failed, by reason",
                         [(reason_label(k), str(v)) for k, v in by_reason],
                         caption="every time one did: a URL retried counts again")  # fmt: skip
        parts.append(Columns([reasons, _pairs("top failing hosts (recent)", hosts)],
                             padding=(0, 4)))  # fmt: skip
    if snap.webhooks:
        parts.append(_pairs("webhooks (delivered / pending)", [
            (c.target, f"{c.delivered} / {c.pending}" + _last_error(c)) for c in snap.webhooks
        ]))  # fmt: skip
    if snap.backfills:
        parts.append(backfill_table(snap.backfills))
    if snap.stories:
        parts.append(stories_table(snap.stories, "biggest stories"))
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    return Group(f"[bold]newsq stats[/bold]  {stamp}", *parts)


def _queue_rows(snap: Snapshot, name: str, lanes: Mapping[str, int]) -> list[tuple[str, str]]:
    """A queue's waiting and taken messages, then its waiting ones by lane."""
    return [
        (
            f"queue {name} (waiting / taken)",
            f"{sum(lanes.values())} / {snap.reserved.get(name, 0)}",
        ),
        (f"  {name} waiting, fresh / bulk", f"{lanes.get('fresh', 0)} / {lanes.get('bulk', 0)}"),
    ]


def _last_error(cursor: Cursor) -> str:
    if not cursor.last_error or cursor.last_error_at is None:
        return ""
    return f"; last error {cursor.last_error_at:%Y-%m-%d %H:%M:%S}: {cursor.last_error}"


def throttle_line(snap: Snapshot) -> str:
    """What caps the speed when workers hold URLs until their host's turn."""
    t = snap.throttle
    assert t is not None
    hosts = f"{t.hosts} host{'s' if t.hosts != 1 else ''}"
    if t.host_rate > 0:
        cap = f", about {t.hosts * t.host_rate:.1f} URLs/s for these hosts"
        by = (f"the per-host rate (NEWSQ_HOST_RATE={t.host_rate:g} unless NEWSQ_HOST_RATES, "
              f"the sites file or a Crawl-delay set a host's own{cap})")  # fmt: skip
    else:  # a per-host override or a robots.txt Crawl-delay
        by = "per-host rates (NEWSQ_HOST_RATES, the sites file, robots.txt Crawl-delay)"
    return (f"[yellow]throttled by {by}[/yellow]: {t.waiting} URLs of {hosts} "
            "waiting for their host's turn")  # fmt: skip
