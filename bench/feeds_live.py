"""Thousands of feeds polled for real: one ``newsq worker --beat`` against 10,000 feeds
on 50 loopback hosts, the feeds gaining items now and then.

Each host is a loopback HTTP server (an address of its own when loopback aliases can be
bound) serving its share of the feeds (``/f/<n>.xml``, RSS, an ``ETag`` and a 304 to a
conditional request that matches) and their article pages. The feeds are registered with
``newsq feeds add --file`` at one fixed interval, and their first due times read from the
store before the worker starts; a feed's n-th poll is due ``n`` intervals after its first
(``next_due`` counts from the time a feed was due, not from when its poll came). The bench
prints how late the polls came against those times, the polls and 304s per feed, each new
item's time from appearing in its feed to its article stored, and the worker's CPU.

    python -m bench.feeds_live [--feeds 10000] [--hosts 50] [--every 300] [--intervals 1]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import psutil
import sqlalchemy as sa

from bench import serve
from bench.tables import markdown, percentile
from newsq.demo.site import loopback_aliases
from newsq.store.database import Store, feeds, urls
from newsq.workers.redis_server import RedisServer
from tests.faults.site import _vocabulary
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent


class Farm:
    """The feeds, their items and every poll's time."""

    def __init__(self, count: int, hosts: int, seed: int) -> None:
        self.count, self.hosts = count, hosts
        self.rng = random.Random(seed)
        self.vocab = _vocabulary()
        self.lock = threading.Lock()
        self.items: dict[int, list[tuple[int, float]]] = defaultdict(list)  # feed -> (story, at)
        self.polls: dict[int, list[float]] = defaultdict(list)
        self.not_modified = 0
        self.bases: list[str] = []
        self._servers: list[object] = []
        self.stories = 0

    def host_of(self, feed: int) -> int:
        return feed % self.hosts

    def feed_url(self, feed: int) -> str:
        return f"{self.bases[self.host_of(feed)]}/f/{feed}.xml"

    def article_url(self, feed: int, story: int) -> str:
        return f"{self.bases[self.host_of(feed)]}/a/{story}.html"

    def publish(self, feed: int, now: float) -> None:
        with self.lock:
            self.items[feed].append((self.stories, now))
            self.stories += 1

    def feed_body(self, feed: int) -> tuple[bytes, str]:
        with self.lock:
            listed = list(self.items[feed][-10:])
        entries = "".join(
            f"<item><title>Story {s}</title><link>{self.article_url(feed, s)}</link>"
            f"<pubDate>{datetime.fromtimestamp(at, UTC):%a, %d %b %Y %H:%M:%S} GMT</pubDate>"
            "</item>"
            for s, at in reversed(listed)
        )
        body = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {feed}</title>'
                f"{entries}</channel></rss>").encode()  # fmt: skip
        return body, f'"{feed}-{len(self.items[feed])}"'

    def article(self, story: int) -> bytes:
        rng = random.Random(story * 7919 + 1)
        paragraphs = "".join(
            "<p>" + " ".join(rng.sample(self.vocab, rng.randint(40, 60))).capitalize() + ".</p>"
            for _ in range(rng.randint(4, 7))
        )
        title = " ".join(rng.sample(self.vocab, 7)).capitalize()
        return (f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
                f"{paragraphs}</article></body></html>").encode()  # fmt: skip

    def serve(self) -> None:
        aliases = loopback_aliases()
        for n in range(self.hosts):
            server = serve.start(_handler(self), f"127.0.0.{n + 2}" if aliases else "127.0.0.1")
            self._servers.append(server)
            self.bases.append(serve.base_url(server))

    def stop(self) -> None:
        for server in self._servers:
            serve.stop(server)  # type: ignore[arg-type]


def _handler(farm: Farm) -> type[serve.Handler]:
    class Handler(serve.Handler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("/f/"):
                feed = int(path[3:].split(".")[0])
                body, tag = farm.feed_body(feed)
                fresh = self.headers.get("If-None-Match") == tag
                with farm.lock:
                    farm.polls[feed].append(time.time())
                    farm.not_modified += fresh
                self.reply(304 if fresh else 200, b"" if fresh else body,
                           "application/rss+xml", {"ETag": tag})  # fmt: skip
            elif path.startswith("/a/"):
                self.reply(200, farm.article(int(path[3:].split(".")[0])), "text/html")
            else:
                self.reply(404, b"not here", "text/plain")

    return Handler


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--every", type=float, default=300.0, help="each feed's interval, s")
    parser.add_argument("--intervals", type=float, default=1.0, help="intervals measured")
    parser.add_argument("--new", type=float, default=1.0, help="new items a second, all feeds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--host-rate", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    farm = Farm(args.feeds, args.hosts, args.seed)
    farm.serve()
    try:
        with tempfile.TemporaryDirectory(prefix="newsq-feeds-") as tmp, RedisServer() as redis:
            run(args, farm, Path(tmp), redis.url)
    finally:
        farm.stop()


def run(args: argparse.Namespace, farm: Farm, tmp: Path, redis_url: str) -> None:
    db = tmp / "feeds.db"
    env = {**os.environ, "NEWSQ_BROKER_URL": redis_url, "NEWSQ_DATABASE_URL": f"sqlite:///{db}",
           "NEWSQ_KEY_PREFIX": "feeds", "NEWSQ_ALLOW_PRIVATE": "1", "NEWSQ_ROBOTS": "0",
           "NEWSQ_HOST_RATE": str(args.host_rate), "NEWSQ_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    listing = tmp / "feeds.txt"
    listing.write_text("".join(farm.feed_url(f) + "\n" for f in range(args.feeds)))
    every = f"{args.every:g}s"
    added = time.monotonic()
    subprocess.run([sys.executable, "-m", "newsq", "feeds", "add", "--file", str(listing),
                    "--every", every, "--min", every, "--max", every], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    add_s = time.monotonic() - added
    store = Store.from_url(f"sqlite:///{db}", create=False)
    by_url = {farm.feed_url(f): f for f in range(args.feeds)}
    start = time.time()
    span = args.every * args.intervals
    # the new items: Poisson over the span, each on a random feed
    news: list[tuple[float, int]] = []
    at = 0.0
    while (at := at + farm.rng.expovariate(args.new)) < span:
        news.append((start + at, farm.rng.randrange(args.feeds)))
    cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process", "--pool",
           "threads", "--concurrency", str(args.concurrency), "--beat"]  # fmt: skip
    dues = Dues(store)
    with running(cmd, env, tmp / "worker.log") as proc:
        worker = psutil.Process(proc.pid)
        for when, feed in news:
            time.sleep(max(0.0, when - time.time()))
            farm.publish(feed, when)
        time.sleep(max(0.0, start + span - time.time()))
        cpu_s = sum(sum(p.cpu_times()[:2]) for p in [worker, *worker.children(recursive=True)])
        time.sleep(args.every / 2 + 30)  # more items' windows pass; the last polls end
        ended = time.time()
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited: {(tmp / 'worker.log').read_text()[-2000:]}")
    dues.stop()
    with store.engine.connect() as conn:
        done = {u: (s, _ts(t)) for u, s, t in
                conn.execute(sa.select(urls.c.url, urls.c.state, urls.c.updated_at))}  # fmt: skip
    store.close()
    report(args, farm, dues.real(), by_url, news, done, start, span, cpu_s, add_s, ended)


class Dues:
    """Each feed's ``next_due`` read from the store every half second. A value that was
    still there when its time came is a due time; one replaced before (a claim's lease,
    given back at the poll) is not."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: dict[tuple[str, float], float] = {}  # (feed, due) -> last seen at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            now = time.time()
            with self.store.engine.connect() as conn:
                rows = conn.execute(sa.select(feeds.c.url, feeds.c.next_due)).all()
            for url, due in rows:
                self.seen[url, _ts(due)] = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def real(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for (url, due), last in self.seen.items():
            if last >= due - 0.5:
                out[url].append(due)
        return out


def report(args: argparse.Namespace, farm: Farm, dues: dict[str, list[float]],
           by_url: dict[str, int], news: list[tuple[float, int]],
           done: dict[str, tuple[str, float]], start: float, span: float, cpu_s: float,
           add_s: float, ended: float) -> None:  # fmt: skip
    late: list[float] = []
    missed = 0
    for url, times in dues.items():
        polls = farm.polls.get(by_url[url], [])
        for due in times:
            if not start + 5 <= due < start + span:  # due after the worker was up
                continue
            came = next((t for t in polls if t >= due - 0.5), None)  # the next poll
            if came is None:
                missed += 1
            else:
                late.append(came - due)
    total = sum(len(p) for p in farm.polls.values())
    stored: list[float] = []
    lost = 0
    # an item counts once its whole window (its feed's interval + 30 s) had passed at the
    # end; one that came later may wait for its feed's next poll past the end
    timed = [(when, feed) for when, feed in news if when <= ended - args.every - 30]
    for when, feed in timed:
        story = next(s for s, at in farm.items[feed] if at == when)
        got = done.get(farm.article_url(feed, story))
        if got is None or got[0] not in ("stored", "duplicate"):
            lost += 1
        else:
            stored.append(got[1] - when)
    print(f"{args.feeds} feeds on {args.hosts} hosts, every {args.every:g} s (registered "
          f"with feeds add --file in {add_s:.1f} s), {args.intervals:g} intervals measured; "
          f"{len(news)} new items; one worker --beat, {args.concurrency} threads, host rate "
          f"{args.host_rate:g}/s; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(markdown([
        ["polls due", "came p50 / p95 / max s late", "not polled", "polls", "304s",
         "new items stored (window passed)", "appeared → stored p50 / p95 / max s",
         "worker CPU % of a core", "CPU ms per poll"],
        [str(len(late) + missed),
          f"{percentile(late, 0.5):.1f} / {percentile(late, 0.95):.1f} / "
          f"{max(late, default=float('nan')):.1f}",
          str(missed), str(total), str(farm.not_modified), f"{len(stored)} of {len(timed)}",
          f"{percentile(stored, 0.5):.1f} / {percentile(stored, 0.95):.1f} / "
          f"{max(stored, default=float('nan')):.1f}",
          f"{100 * cpu_s / span:.0f}", f"{1000 * cpu_s / max(1, total):.1f}"],
    ]))  # fmt: skip
    print(
        f"Targets: due polls start within 30 s (p95 {percentile(late, 0.95):.1f} s, max "
        f"{max(late, default=float('nan')):.1f}); an item stored p95 within its feed's "
        f"interval + 30 s = {args.every + 30:g} s (p95 {percentile(stored, 0.95):.1f} s); "
        f"{lost} items not stored"
    )


if __name__ == "__main__":
    main()
