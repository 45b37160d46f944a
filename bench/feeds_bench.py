"""Beat with thousands of feeds: CPU per tick and how due polls spread over time.

``python -m bench.feeds_bench [--feeds 10000] [--every 600] [--database URL]``

Registers N feeds (``add_feeds``, as ``newsq feeds add --file``) in a fresh store
(SQLite in a temporary folder unless ``--database`` names another), then plays beat's
ticks over two intervals of virtual time: each tick does what ``newsq.poll_feeds``
does (:func:`claim_due`, one ``newsq.feed`` message per claimed feed to a throwaway
redis-server) and is timed in CPU (``time.thread_time``); the polls themselves are not
made, only their rescheduling (``next_due``, two seconds after the claim), written in
one batch outside the timing. Per configuration: feeds claimed per tick, how late each
was claimed after its due time, and the tick's CPU. "all due at once" is 10,000 feeds
registered one by one (each due now), the herd the jitter avoids.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import redis
import sqlalchemy as sa

from newsq.config.celery import FEED_TASK, FETCH_QUEUE, make_app
from newsq.config.settings import Settings
from newsq.feeds.poll import add_feeds, claim_due, next_due
from newsq.store.database import Store, feeds
from newsq.workers.redis_server import RedisServer

POLL_S = 2.0
"""How long after its claim a simulated poll reschedules its feed."""


@dataclass
class Run:
    name: str
    tick: float
    register_s: float
    claimed: list[int]
    late: list[float]
    cpu: list[float]
    claim_cpu: list[float]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def simulate(name: str, database_url: str, settings: Settings, client: redis.Redis,
             n: int, every: float, tick: float, *, herd: bool) -> Run:  # fmt: skip
    store = Store.from_url(database_url)
    app = make_app(settings)
    try:
        lines = [f"https://site{i % 2000}.example/feed-{i}.xml" for i in range(n)]
        started = time.perf_counter()
        add_feeds(store, lines, settings, every=every, min_every=every, max_every=every)
        register_s = time.perf_counter() - started
        start = datetime.now().astimezone()
        if herd:  # one by one, each "due now": all come due in the first tick
            with store.engine.begin() as conn:
                conn.execute(sa.update(feeds).values(next_due=start))
        reschedule = sa.update(feeds).where(feeds.c.url == sa.bindparam("u"))
        reschedule = reschedule.values(next_due=sa.bindparam("d"))
        run = Run(name, tick, register_s, [], [], [], [])
        for k in range(int(2 * every / tick) + 1):
            now = start + timedelta(seconds=k * tick)
            cpu = time.thread_time()
            claimed = claim_due(store, settings, now=now)
            run.claim_cpu.append(time.thread_time() - cpu)
            with app.producer_or_acquire() as producer:
                for url, due in claimed.items():
                    app.send_task(FEED_TASK, args=(url, due.isoformat()), queue=FETCH_QUEUE,
                                  producer=producer)  # fmt: skip
            run.cpu.append(time.thread_time() - cpu)
            run.claimed.append(len(claimed))
            run.late.extend((now - due).total_seconds() for due in claimed.values())
            client.delete(f"{settings.key_prefix}:q:{FETCH_QUEUE}")
            polled = now + timedelta(seconds=POLL_S)
            rows = [{"u": url, "d": next_due(due, every, polled)} for url, due in claimed.items()]
            if rows:
                with store.engine.begin() as conn:
                    conn.execute(reschedule, rows)
        return run
    finally:
        app.close()
        store.close()


def table(runs: list[Run], n: int, every: float) -> str:
    head = ("configuration", "tick s", "feeds/tick mean / max", "claimed late p50 / p95 / max s",
            "beat CPU/tick mean / max ms", "of it claims ms", "µs/feed",
            "CPU % of a core mean / worst tick")  # fmt: skip
    rows = [head]
    for r in runs:
        busy = [c for c, k in zip(r.cpu, r.claimed, strict=True) if k] or [0.0]
        rows.append((
            r.name, f"{r.tick:g}",
            f"{statistics.mean(r.claimed):.0f} / {max(r.claimed)}",
            f"{_pct(r.late, 0.5):.1f} / {_pct(r.late, 0.95):.1f} / {max(r.late, default=0):.1f}",
            f"{1000 * statistics.mean(r.cpu):.1f} / {1000 * max(busy):.0f}",
            f"{1000 * statistics.mean(r.claim_cpu):.1f}",
            f"{1e6 * sum(r.cpu) / max(1, sum(r.claimed)):.0f}",
            f"{100 * statistics.mean(r.cpu) / r.tick:.2f} / {100 * max(busy) / r.tick:.0f}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"{n} feeds, every {every:g} s, over {2 * every:g} s of ticks; registering "
             f"them took {runs[0].register_s:.2f} s"]  # fmt: skip
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
              for row in rows]  # fmt: skip
    lines.insert(2, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=10_000, help="feeds registered")
    parser.add_argument("--every", type=float, default=600.0, help="their interval, seconds")
    parser.add_argument("--database", help="a store URL (default: SQLite in a temporary folder)")
    args = parser.parse_args(argv)
    configs = [("spread (--file)", 30.0, False), ("spread (--file)", 10.0, False),
               ("all due at once", 30.0, True)]  # fmt: skip
    runs = []
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        client = redis.Redis.from_url(server.url)
        for i, (name, tick, herd) in enumerate(configs):
            url = args.database or f"sqlite:///{Path(tmp) / f'feeds-{i}.db'}"
            if args.database:
                with Store.from_url(url).engine.begin() as conn:
                    conn.execute(sa.delete(feeds))
            settings = replace(Settings(), broker_url=server.url, database_url=url,
                               key_prefix="bench", feed_tick=tick)  # fmt: skip
            runs.append(simulate(name, url, settings, client, args.feeds, args.every, tick,
                                 herd=herd))  # fmt: skip
        client.close()
    print(table(runs, args.feeds, args.every))


if __name__ == "__main__":
    main()
