"""Fresh news during a backfill: how long a new feed item waits behind a bulk backlog.

``python -m bench.priority [--backlog 20000] [--fresh 30] [--every 1.5] [--timeout 120]
[--only bulk|fresh]``

A local site (``bench.speed_http``'s static server) serves ``--backlog`` distinct
synthetic articles and ``--fresh`` more; a second server serves an RSS feed that gains
one of the fresh items every ``--every`` seconds. The backlog is enqueued at once (as
``newsq enqueue --urls`` does), then one worker (``newsq worker --beat``, the combined
layout: fetch and process in one thread pool, 32 threads) starts on it, with the feed
registered to be polled every 2 s; the feed's items start appearing once the first
backlog URL is stored. Per run: the time from a fresh item enqueued (its poll) to stored,
p50/p95/max, from the ledger's ``t_enq`` and ``t_done``; from the item appearing in the
feed (adds the poll interval); and how far the backlog had got. Two runs:

    bulk   the backlog in the bulk lane, as newsq sends a URL file (the priorities)
    fresh  the backlog in the fresh lane, with the feed's items: one FIFO (without)

A run ends when every fresh item is stored, or at ``--timeout`` (an item not stored by
then counts as waiting longer than it had: ``> N``); the backlog is left unfinished
(its rate is printed). In the fresh run the feed's polls wait in the FIFO too, so the
time from the item appearing in the feed is the one to compare. Redis and the store
(SQLite) are throwaway ones.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import redis

from bench import serve
from bench.speed_serve import Served, _wait_port
from bench.tables import markdown
from newsq.config.celery import BULK, FRESH, make_app
from newsq.config.settings import Settings
from newsq.feeds.intake import enqueue
from newsq.feeds.poll import add_feed
from newsq.feeds.send import send_fetches
from newsq.ledger import Ledger, read_counts
from newsq.records import TERMINAL
from newsq.store.database import Store
from newsq.workers.redis_server import RedisServer, free_port
from tests.faults.site import _vocabulary, article_html
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent
POLL_EVERY_S = 2.0
PREFIX = "bench"


@dataclass
class Run:
    lane: str
    waited: list[tuple[float, bool]]
    """per fresh item, enqueued (by its poll) → stored, s; False: not stored by the end,
    the time is how long it had waited then (not enqueued: since it appeared)"""
    since_seen: list[tuple[float, bool]]
    """per fresh item, in the feed → stored, s (likewise)"""
    backlog_done: int
    backlog_s: float
    """from the first backlog URL stored to the run's end"""


def write_site(root: Path, backlog: int, fresh: int) -> tuple[list[str], list[str]]:
    """Synthetic distinct articles under ``root``: the backlog's paths, the fresh ones'."""
    vocab = _vocabulary()
    for folder in ("b", "f"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    bulk = [f"/b/{n}.html" for n in range(backlog)]
    new = [f"/f/{n}.html" for n in range(fresh)]
    for n, path in enumerate(bulk + new):
        (root / path.lstrip("/")).write_bytes(article_html(n, vocab))
    return bulk, new


@contextmanager
def static_server(docroot: Path) -> Iterator[Served]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.speed_http", "static", str(docroot), str(port)]
    served = Served(subprocess.Popen(cmd, stdin=subprocess.DEVNULL), port, "static")
    try:
        _wait_port(port, served.proc, "the static server")
        yield served
    finally:
        served.stop()


class Feed:
    """An RSS feed whose items appear one by one, every ``every`` s once started."""

    def __init__(self, links: list[str], every: float) -> None:
        self.links = links
        self.every = every
        self.started: float | None = None

    def appeared(self, now: float | None = None) -> list[tuple[str, float]]:
        """The items in the feed by ``now``, with the time each appeared."""
        if self.started is None:
            return []
        now = time.time() if now is None else now
        count = min(len(self.links), int((now - self.started) / self.every) + 1)
        return [(link, self.started + i * self.every) for i, link in enumerate(self.links[:count])]

    def body(self) -> bytes:
        items = "".join(
            f"<item><title>Fresh {i}</title><link>{link}</link>"
            f"<pubDate>{format_datetime(datetime.fromtimestamp(at, UTC))}</pubDate></item>"
            for i, (link, at) in enumerate(reversed(self.appeared()))
        )
        return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Fresh</title>'
                f"<link>http://127.0.0.1/</link>{items}</channel></rss>").encode()  # fmt: skip


@contextmanager
def feed_server(feed: Feed) -> Iterator[str]:
    class Handler(serve.Handler):
        def do_GET(self) -> None:
            self.reply(200, feed.body(), "application/rss+xml")

    with serve.serving(Handler) as base:
        yield f"{base}/feed.xml"


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NEWSQ_BROKER_URL": settings.broker_url or "",
        "NEWSQ_DATABASE_URL": settings.database_url,
        "NEWSQ_KEY_PREFIX": PREFIX,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": "0",
        "NEWSQ_HOST_CONCURRENCY": "256",
        "NEWSQ_ROBOTS": "0",
        "NEWSQ_MAX_AGE_DAYS": "0",
        "NEWSQ_FEED_TICK": "1",
        "NEWSQ_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    })  # fmt: skip
    return env


def one_run(lane: int, args: argparse.Namespace, base: str, bulk: list[str],
            fresh: list[str], tmp: Path) -> Run:  # fmt: skip
    name = "bulk" if lane == BULK else "fresh"
    feed = Feed([base + path for path in fresh], args.every)
    with RedisServer() as server, feed_server(feed) as feed_url:
        settings = replace(Settings(), broker_url=server.url, key_prefix=PREFIX,
                           database_url=f"sqlite:///{tmp / f'{name}.db'}",
                           max_age_days=0.0)  # fmt: skip
        client = redis.Redis.from_url(server.url)
        ledger = Ledger(client, PREFIX)
        store = Store.from_url(settings.database_url)
        app = make_app(settings)
        backlog = [base + path for path in bulk]
        new: list[str] = []
        enqueue(ledger, store, backlog, send=new.extend)
        send_fetches(app, new, settings.fetch_batch, lane=lane)  # as a URL file: 8 a message
        add_feed(store, feed_url, settings, every=POLL_EVERY_S, min_every=POLL_EVERY_S,
                 max_every=POLL_EVERY_S)  # fmt: skip
        store.close()
        app.close()
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
               "--pool", "threads", "--concurrency", "32", "--beat"]  # fmt: skip
        log = tmp / f"{name}-worker.log"
        with running(cmd, worker_env(settings), log) as proc:
            while not read_counts(client, PREFIX)["stored"]:
                if proc.poll() is not None:
                    raise SystemExit(f"bench: the worker exited; see {log}")
                time.sleep(0.1)
            feed.started = started = time.time()
            deadline = time.monotonic() + args.timeout
            fresh_urls = feed.links
            while time.monotonic() < deadline:
                states = ledger.states(fresh_urls)
                if all(state in TERMINAL for state in states):
                    break
                time.sleep(0.5)
            ended = time.time()
        seen = dict(feed.appeared(ended))
        waited, since_seen = [], []
        for url in fresh_urls:
            entry = ledger.get(url) or {}
            appeared = seen.get(url, ended)
            done = entry.get("state") == "stored" and bool(entry.get("t_done"))
            end = float(entry["t_done"]) if done else ended
            waited.append((end - float(entry.get("t_enq") or appeared), done))
            since_seen.append((end - appeared, done))
        finished = sum(state in TERMINAL for state in ledger.states(backlog))
        client.close()
    return Run(name, waited, since_seen, finished, ended - started)


def _pct(values: list[tuple[float, bool]], q: float) -> str:
    """The ``q`` quantile; ``> N`` when it falls on an item not stored by the end."""
    seconds, done = sorted(values, key=lambda v: (not v[1], v[0]))[
        min(len(values) - 1, int(q * len(values)))
    ]
    return f"{seconds:.1f}" if done else f"> {seconds:.0f}"


def table(runs: list[Run], backlog: int) -> str:
    head = ("backlog lane", "fresh stored", "enqueued → stored p50 / p95 / max s",
            "in feed → stored p50 / p95 s", "backlog done", "backlog pages/s")  # fmt: skip
    rows = [head]
    for r in runs:
        rows.append((
            f"{r.lane}{' (without)' if r.lane == 'fresh' else ''}",
            f"{sum(done for _, done in r.waited)} of {len(r.waited)}",
            " / ".join(_pct(r.waited, q) for q in (0.5, 0.95, 1.0)),
            " / ".join(_pct(r.since_seen, q) for q in (0.5, 0.95)),
            f"{r.backlog_done} of {backlog}",
            f"{r.backlog_done / max(r.backlog_s, 1e-9):.0f}",
        ))  # fmt: skip
    return markdown(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=20_000, help="bulk URLs enqueued first")
    parser.add_argument("--fresh", type=int, default=30, help="feed items appearing during it")
    parser.add_argument("--every", type=float, default=1.5, help="seconds between feed items")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest run, seconds")
    parser.add_argument("--only", choices=("bulk", "fresh"), help="one of the two runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="newsq-priority-") as folder:
        tmp = Path(folder)
        bulk, fresh = write_site(tmp / "site", args.backlog, args.fresh)
        runs = []
        with static_server(tmp / "site") as site:
            for lane in (BULK, FRESH):
                if args.only in (None, "bulk" if lane == BULK else "fresh"):
                    runs.append(one_run(lane, args, site.base, bulk, fresh, tmp))
                    print(table(runs, args.backlog), file=sys.stderr)  # so far
    print(f"{args.backlog} backlog URLs, {args.fresh} feed items (one every {args.every:g} s, "
          f"the feed polled every {POLL_EVERY_S:g} s), one worker of 32 threads "
          f"(fetch,process), {os.cpu_count()} cores")  # fmt: skip
    print(table(runs, args.backlog))
    if runs and runs[0].lane == "bulk":
        p95 = _pct(runs[0].waited, 0.95)
        held = not p95.startswith(">") and float(p95) <= 10
        print(f"target (a fresh item stored p95 within 10 s of its enqueue during the backlog): "
              f"{'holds' if held else 'missed'}, p95 {p95} s")  # fmt: skip


if __name__ == "__main__":
    main()
