"""Benchmark of the URL ledger's Redis memory: per URL while live, and after the retention.

    python -m bench.ledger_bench [--n 20000] [--retention 30]

On a throwaway redis-server of its own, twice in one run: once with the ledger kept
for ten years (what every URL cost before entries expired) and once with a retention
of ``--retention`` seconds. Each time, ``--n`` URLs are enqueued as ``newsq enqueue``
does (claimed in Redis, checked against the store), taken and ended with the writes a
finishing step makes (the store's record, then the ledger's move with the fields a
stored or duplicate article carries), and Redis' ``used_memory`` is read:

- *live*: once every URL ended, its entry still in Redis;
- *after the retention*: once the entries expired (the kept run: at once, nothing expires);
- *enqueued again*: after the same ``--n`` URLs were enqueued once more, how many were
  taken as new (goal 0: the store knows them) and what that left in Redis.

Bytes per URL are used_memory growth over an empty ledger (scripts loaded) / n;
``MEMORY USAGE`` of sampled entries gives one entry's size.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from newsq.ledger import Ledger, entry_pattern
from newsq.records import DUPLICATE, FETCHING, STORED
from newsq.store.database import Store
from newsq.workers.redis_server import RedisServer

KEPT_DAYS = 3650.0
PREFIX = "newsq"


def synthetic_url(i: int) -> str:
    return f"https://www.outlet{i % 500}.example.com/news/2026/05/{i}-officials-say-the-story-slug"


@dataclass(frozen=True)
class Round:
    """What one retention cost, in bytes per URL."""

    label: str
    live: float
    after: float
    again: float
    entry: float
    new_again: int
    again_seconds: float


def used_memory(client: redis.Redis, settle: float = 0.0) -> int:
    """Redis' used_memory; with ``settle``, once it stopped falling (Redis shrinks its
    key tables a little at a time after keys go) or after ``settle`` seconds."""
    last = int(client.info("memory")["used_memory"])
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = int(client.info("memory")["used_memory"])
        if now >= last:
            return now
        last = now
    return last


def _finish(ledger: Ledger, store: Store, urls: list[str], rng: random.Random) -> None:
    """End each URL as the pipeline does: stored (or, one in five, a duplicate)."""
    for i, url in enumerate(urls):
        ledger.begin(url, FETCHING)
        story = f"{rng.getrandbits(64):016x}"
        duplicate = i % 5 == 4
        state = DUPLICATE if duplicate else STORED
        store.record_outcome({"url": url, "state": state, "story_id": story, "attempts": 1})
        match = "exact" if duplicate else "new"
        fields: dict[str, Any] = {"attempts": 1, "final_url": url, "story_id": story,
                                  "similarity": "1.0", "match": match}  # fmt: skip
        if duplicate:
            fields["duplicate_of"] = urls[i - 1]
        ledger.move(url, state, **fields)


def _expired(client: redis.Redis, ledger: Ledger, within: float) -> bool:
    """Wait until no entry is left (Redis drops expired keys in its own time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if next(client.scan_iter(match=entry_pattern(ledger.prefix), count=5000), None) is None:
            return True
        time.sleep(0.5)
    return False


def one_round(client: redis.Redis, folder: Path, label: str, retention_s: float,
              n: int) -> Round:  # fmt: skip
    client.flushall()
    store = Store.from_url(f"sqlite:///{folder / str(int(retention_s))}.db")
    ledger = Ledger(client, PREFIX, retention_days=retention_s / 86400)
    # scripts loaded, counters made, Redis' script buffers at a full batch: not per URL
    warm = [f"https://warm.example/{i}" for i in range(500)]
    ledger.enqueue(warm, recorded=store.recorded)
    for url in warm:
        ledger.move(url, STORED)
    client.delete(*(ledger.key(u) for u in warm))
    base = used_memory(client, settle=10)

    urls = [synthetic_url(i) for i in range(n)]
    started = time.monotonic()
    if not all(ledger.enqueue(urls, recorded=store.recorded)):
        raise SystemExit(f"{label}: a URL was known the first time")
    _finish(ledger, store, urls, random.Random(7))
    sample = urls[:: max(1, n // 200)]
    entry = sum(int(client.memory_usage(ledger.key(u)) or 0) for u in sample) / len(sample)
    live = used_memory(client) - base
    if not client.exists(ledger.key(urls[0])):
        raise SystemExit(f"{label}: entries expired before all URLs ended: raise --retention")
    wait = max(0.0, retention_s - (time.monotonic() - started)) + 30
    if retention_s < KEPT_DAYS * 86400 and not _expired(client, ledger, wait):
        raise SystemExit(f"{label}: the entries did not expire within {wait:.0f} s")
    client.connection_pool.disconnect()  # its buffers, grown by big replies, are no URL's
    after = used_memory(client, settle=10) - base

    started = time.monotonic()
    again = ledger.enqueue(urls, recorded=store.recorded)
    again_s = time.monotonic() - started
    client.connection_pool.disconnect()
    left = used_memory(client, settle=10) - base
    store.close()
    return Round(label, live / n, after / n, left / n, entry, sum(again), again_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="URLs per round")
    parser.add_argument("--retention", type=float, default=30.0,
                        help="seconds of the bounded round's retention")  # fmt: skip
    args = parser.parse_args(argv)
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bounded = f"retention {args.retention:g} s"
            rounds = [
                one_round(client, Path(tmp), "kept (before)", KEPT_DAYS * 86400, args.n),
                one_round(client, Path(tmp), bounded, args.retention, args.n),
            ]
    finally:
        client.close()
        server.stop()
    length = sum(len(synthetic_url(i)) for i in range(args.n)) / args.n
    print(
        f"Redis bytes per URL, {args.n} URLs of {length:.0f} characters on average "
        "(used_memory growth / n)\n"
    )
    print(
        "| ledger | live | after the retention | enqueued again | one entry "
        "(MEMORY USAGE) | new when enqueued again | enqueue again, ms per 1000 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        print(f"| {r.label} | {r.live:.0f} | {r.after:.1f} | {r.again:.1f} | {r.entry:.0f} "
              f"| {r.new_again} | {r.again_seconds / args.n * 1000 * 1000:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
