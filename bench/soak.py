"""A compressed month of feeds: Redis stays flat, old URLs stay known, nothing is lost.

``python -m bench.soak [--days 30] [--day-seconds 4] [--quick] [--outlets 5] [--rate 4]``

A site farm on loopback (``--outlets`` outlets, each on a loopback address of its own
when they can be bound, in the sample site's templates): each outlet's RSS feed gains
new articles, ``--rate`` originals a second across the farm, and lists each for
``--feed-days`` simulated days (longer than the ledger's retention, so polls after an
entry expired give its URL again). A share of the articles (``--copies``) is republished
by another outlet a few seconds later, half as exact copies, half edited as syndicated
copies are (``newsq.demo.edits``). Outlet 0 also serves a sitemap of its recent articles
and of ``--old`` archive entries dated well past ``NEWSQ_MAX_AGE_DAYS``. Feeds and
sitemap answer ``ETag`` / ``Last-Modified`` and 304 to conditional polls.

They are registered with ``newsq feeds add --file`` (every 2 s, adaptive within 1-4 s)
and polled by one ``newsq worker --beat`` (fetch and process in a thread pool) against a
private redis-server and a SQLite store in a temporary folder, with every window
compressed so that one simulated day is ``--day-seconds``: the ledger's retention, the
dedup window, the boilerplate TTL and the maximum entry age are given in simulated days.

At each day's end it reads the store (URL outcomes), Redis (``used_memory``, keys and
each key's ``MEMORY USAGE``) and the farm (requests). It prints per day: URLs published
and taken in, stored, duplicates, in flight, Redis memory and keys, store size, the p95
time from an article appearing in its feed to its terminal outcome (the store's
``updated_at``; of the articles published those days), polls per feed and 304s. At the
end: URLs fetched more than once (the farm's count of requests per article; goal 0),
archive entries fetched (goal 0), URLs lost (published and without a terminal outcome
after a drain of up to ``--drain`` s; goal 0), ``newsq status URL`` for URLs of the
first days (their ledger entries expired), and Redis' cost per URL beyond the windows
(target <= 32 bytes) two ways: its growth between the first day after the longest
window and the end (a whole number of dedup generations apart, and a least-squares fit
over the days), and what is left once every window passed after the last article,
against Redis before the first (with and without Redis' slow log), split into
INFO memory's parts.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path

import redis
import sqlalchemy as sa

from bench.soak_farm import Farm, schedule
from bench.tables import percentile
from newsq.api import status
from newsq.config.settings import Settings
from newsq.records import TERMINAL
from newsq.store.database import Store, urls
from newsq.urls import normalize
from newsq.workers.redis_server import RedisServer
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "soak"
DAY = 86400.0


# -- the run ------------------------------------------------------------------------


@dataclass
class Snapshot:
    day: int
    published: int
    taken: int
    states: Counter[str]
    used_memory: int
    keys: int
    store_bytes: int
    kinds: dict[str, tuple[int, int]]
    """kind of key -> (keys, their MEMORY USAGE bytes)"""
    parts: dict[str, int]
    """used_memory's parts (INFO memory): dataset, clients, scripts, other overhead"""

    @property
    def owned(self) -> int:
        return sum(b for _, b in self.kinds.values())


KINDS = (("ledger, other", f"{{{PREFIX}}}:"),
         ("dedup counter", f"{{{PREFIX}:dedup}}:seq"), ("dedup index", f"{{{PREFIX}:dedup}}"),
         ("boilerplate", f"{PREFIX}:bp:"),
         ("politeness, robots", f"{{{PREFIX}:fetch}}:polite:"),
         ("politeness, robots", f"{PREFIX}:robots"), ("frontier", f"{{{PREFIX}:fetch}}:frontier:"),
         ("page bodies", f"{PREFIX}:body:"), ("queues", f"{PREFIX}:q:"))  # fmt: skip


def kind_of(key: str) -> str:
    if key.startswith(f"{{{PREFIX}:l:"):  # a ledger bucket's
        return "ledger entries" if ":url:" in key else "ledger, other"
    return next((name for name, start in KINDS if key.startswith(start)), "Celery, other")


def key_memory(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Keys and their ``MEMORY USAGE`` bytes by kind (a key gone meanwhile counts 0)."""
    keys = [k.decode() for k in client.scan_iter(count=1000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for key, size in zip(keys, pipe.execute(), strict=True):
        counts[kind_of(key)] += 1
        sizes[kind_of(key)] += int(size or 0)
    return {k: (counts[k], sizes[k]) for k in counts}


def worker_env(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    days = args.day_seconds / DAY
    env = dict(os.environ)
    env.update({
        "NEWSQ_BROKER_URL": settings.broker_url or "",
        "NEWSQ_DATABASE_URL": settings.database_url,
        "NEWSQ_KEY_PREFIX": PREFIX,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": str(args.host_rate),
        "NEWSQ_FEED_TICK": "0.5",
        "NEWSQ_LEDGER_RETENTION_DAYS": f"{args.retention * days:.8f}",
        "NEWSQ_DEDUP_WINDOW_DAYS": f"{args.dedup * days:.8f}",
        "NEWSQ_BOILERPLATE_TTL_DAYS": f"{args.boilerplate * days:.8f}",
        "NEWSQ_MAX_AGE_DAYS": f"{args.max_age * days:.8f}",
        "NEWSQ_DEDUP_CAPACITY": str(args.dedup_capacity),
        "NEWSQ_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    })  # fmt: skip
    return env


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def outcomes(store: Store) -> dict[str, tuple[str, float]]:
    """Each URL's state in the store, with when its row was last written (epoch s)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(urls.c.url, urls.c.state, urls.c.updated_at)).all()
    return {u: (s, (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()) for u, s, t in rows}


def snapshot(day: int, farm: Farm, store: Store, client: redis.Redis, db: Path) -> Snapshot:
    now = time.time()
    known = outcomes(store)
    published = farm.started and sum(1 for i in farm.items if farm.published(i) <= now)
    states = Counter(s for s, _ in known.values())
    info = client.info("memory")
    stats = client.memory_stats()
    clients, scripts = int(stats["clients.normal"]), int(stats["lua.caches"])
    parts = {"dataset": int(info["used_memory_dataset"]), "clients": clients, "scripts": scripts,
             "other overhead": int(stats["overhead.total"]) - clients - scripts,
             "connections": int(client.info("clients")["connected_clients"])}  # fmt: skip
    return Snapshot(day, int(published or 0), len(known), states, int(info["used_memory"]),
                    int(client.dbsize()), store_bytes(db), key_memory(client), parts)  # fmt: skip


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares bytes per URL of (URLs taken in, used_memory) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else float("nan")


def run(args: argparse.Namespace, tmp: Path) -> None:
    rng = random.Random(args.seed)
    seconds = args.days * args.day_seconds
    items = schedule(args.outlets, seconds, args.rate, args.copies, rng)
    old_s = (args.max_age * 2 * args.day_seconds, args.max_age * 4 * args.day_seconds)
    farm = Farm(args.outlets, items, args.feed_days * args.day_seconds, args.old, old_s,
                args.seed)  # fmt: skip
    farm.day_s = args.day_seconds
    db = tmp / "soak.db"
    with RedisServer() as server, farm.serve():
        settings = replace(Settings(), broker_url=server.url, database_url=f"sqlite:///{db}",
                           key_prefix=PREFIX)  # fmt: skip
        env = worker_env(settings, args)
        listing = tmp / "feeds.txt"
        listing.write_text("\n".join(farm.feed_urls()) + "\n")
        subprocess.run([sys.executable, "-m", "newsq", "feeds", "add", "--file", str(listing),
                        "--every", "2s", "--min", "1s", "--max", "4s"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        client = redis.Redis.from_url(server.url)
        store = Store.from_url(settings.database_url, create=False)
        log = tmp / "worker.log"
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
               "--pool", "threads", "--concurrency", str(args.concurrency), "--beat"]  # fmt: skip
        snaps: list[Snapshot] = []
        reset_stats(client)
        empty = snapshot(0, farm, store, client, db)  # no worker connected yet
        with running(cmd, env, log) as proc:
            deadline = time.monotonic() + 60
            while not farm.polls:  # beat is up: the first poll came
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(_failed("the worker did not poll", log))
                time.sleep(0.2)
            client.slowlog_reset()  # Redis' own log of slow commands: see left_behind
            before = snapshot(0, farm, store, client, db)  # the worker up and polling
            farm.started = time.time()
            for day in range(args.days):
                time.sleep(max(0.0, farm.started + (day + 1) * args.day_seconds - time.time()))
                if proc.poll() is not None:
                    raise SystemExit(_failed(f"the worker exited on day {day + 1}", log))
                snaps.append(snapshot(day + 1, farm, store, client, db))
                s = snaps[-1]
                print(
                    f"day {s.day}: {s.published} published, {s.taken} taken in, "
                    f"{s.used_memory / 1024:.0f} KiB, {s.keys} keys",
                    file=sys.stderr,
                )
            wanted = {normalize(farm.url(i)) for i in items}
            drain_end = time.monotonic() + args.drain
            while time.monotonic() < drain_end:
                known = outcomes(store)
                if all(known.get(u, ("", 0))[0] in TERMINAL for u in wanted):
                    break
                time.sleep(0.5)
            drained = time.time() - (farm.started + seconds)
            checked = check_status(farm, settings, store, args)
            after = forgotten(args, farm, store, client, db)
            slow = int(client.slowlog_len())
            client.slowlog_reset()
            unlogged = snapshot(-1, farm, store, client, db)
        time.sleep(2)  # Redis' client cron frees what the closed connections held
        histograms = reset_stats(client)
        stopped = snapshot(-1, farm, store, client, db)
        known = outcomes(store)
        store.close()
        client.close()
    report(args, farm, snaps, known, drained, checked)
    print(left_behind(before, after, args))
    print(left_behind(before, unlogged, args, f", then its slow log ({slow} commands) emptied"))
    print(idle_left(empty, stopped, histograms))


def reset_stats(client: redis.Redis) -> int:
    """``CONFIG RESETSTAT``; the used_memory it freed. Redis 7 keeps a latency histogram
    (``latency-tracking``, ~30 KiB) for each kind of command it has run: a fixed cost
    per command name, which a small run would misread as memory per URL."""
    held = int(client.info("memory")["used_memory"])
    client.config_resetstat()
    return held - int(client.info("memory")["used_memory"])


def expiry_days(args: argparse.Namespace) -> float:
    """Days after its last article until every windowed key is gone: the dedup index keeps
    a generation (a quarter window) past the window."""
    return max(args.retention, args.dedup * 1.25, args.boilerplate)


WINDOWED = ("ledger entries", "dedup index", "boilerplate", "page bodies")


def forgotten(args: argparse.Namespace, farm: Farm, store: Store, client: redis.Redis,
              db: Path) -> Snapshot:  # fmt: skip
    """Wait until the windows passed after the last article and their keys are gone (or
    20 s more at most); the worker keeps polling meanwhile."""
    assert farm.started is not None
    last = max(farm.published(i) for i in farm.items)
    time.sleep(max(0.0, last + expiry_days(args) * args.day_seconds - time.time()))
    deadline = time.monotonic() + 20
    while True:
        snap = snapshot(-1, farm, store, client, db)
        if not any(k in snap.kinds for k in WINDOWED) or time.monotonic() > deadline:
            return snap
        time.sleep(1)


def idle_left(empty: Snapshot, stopped: Snapshot, histograms: int) -> str:
    """Redis with the worker stopped against Redis before it started, both without
    their latency histograms: each client connection holds ~40 KiB of buffers whatever
    it did, and a worker's pool opens them as its threads need them, so a comparison
    across different connection counts misreads them as memory per URL."""
    n = max(1, stopped.taken)
    scripts = stopped.parts["scripts"] - empty.parts["scripts"]
    rest = (stopped.used_memory - empty.used_memory - scripts) / n
    held = "holds" if rest <= 32 else "missed"
    return (
        f"\nWith the worker stopped, against Redis before it started (connections "
        f"{empty.parts['connections']} → {stopped.parts['connections']}), each without its "
        f"latency histograms ({histograms / 1024:.0f} KiB at the end): used_memory "
        f"{empty.used_memory / 1024:.0f} → {stopped.used_memory / 1024:.0f} KiB, of it the "
        f"scripts' cache {scripts / 1024:+.0f} KiB (loaded once), the rest {rest:+.1f} bytes "
        f"per URL taken in; {stopped.keys} keys. Target <= 32 bytes per URL: {held}"
    )


def left_behind(before: Snapshot, after: Snapshot, args: argparse.Namespace,
                then: str = "") -> str:  # fmt: skip
    """What the run left in Redis once every window passed, against Redis once the worker
    was up (before the first article), per URL taken in. Redis' slow log (the last 128
    commands over 10 ms, with their arguments) counts in its dataset: it is emptied
    before the first article, and read with and without."""
    n = max(1, after.taken)
    used = (after.used_memory - before.used_memory) / n
    owned = (after.owned - before.owned) / n
    held = "holds" if used <= 32 else "missed"
    kinds = ", ".join(f"{name} {k} ({size} B)" for name, (k, size) in sorted(after.kinds.items()))
    split = ", ".join(f"{name} {(after.parts[name] - before.parts[name]) / 1024:+.0f} KiB"
                      for name in after.parts if name != "connections")  # fmt: skip
    return (
        f"\nRedis once every window passed ({expiry_days(args):g} days after the last "
        f"article){then}, against once the worker was up: used_memory "
        f"{before.used_memory / 1024:.0f} → {after.used_memory / 1024:.0f} KiB, {used:+.1f} "
        f"bytes per URL of the "
        f"{after.taken} taken in ({split}; connections {before.parts['connections']} → "
        f"{after.parts['connections']}); the keys' own bytes (MEMORY USAGE) {owned:+.1f} per "
        f"URL; {after.keys} keys left: {kinds}. Target <= 32 bytes per URL (used_memory): {held}"
    )


def check_status(farm: Farm, settings: Settings, store: Store,
                 args: argparse.Namespace) -> tuple[int, int, int]:  # fmt: skip
    """``newsq status URL`` (the API) for URLs of the first days, their entries expired:
    (asked, answered with a terminal state, of them from the store only)."""
    early = [i for i in farm.items if i.at < args.day_seconds * 2][:30]
    answered = expired = 0
    for item in early:
        got = status(farm.url(item), settings=settings)
        if got is not None and got.get("state") in TERMINAL:
            answered += 1
            expired += not got.get("live")
    return len(early), answered, expired


def report(args: argparse.Namespace, farm: Farm, snaps: list[Snapshot],
           known: dict[str, tuple[str, float]], drained: float,
           checked: tuple[int, int, int]) -> None:  # fmt: skip
    feeds = farm.feed_urls()
    lag: dict[int, list[float]] = {}
    lost = []
    for item in farm.items:
        state, when = known.get(normalize(farm.url(item)), ("", 0.0))
        if state not in TERMINAL:
            lost.append(farm.url(item))
            continue
        lag.setdefault(int(item.at // args.day_seconds) + 1, []).append(when - farm.published(item))
    every = max(1, args.days // 15) if not args.every_day else 1
    head = ("day", "published", "taken in", "stored", "duplicate", "failed/skipped",
            "in flight", "Redis used_memory KiB", "Redis keys", "store KiB",
            "appeared → done p95 s", "polls per feed", "304s")  # fmt: skip
    rows = [head]
    for s in snaps:
        if s.day % every and s.day != len(snaps):
            continue
        days = range(s.day - every + 1 if s.day % every == 0 else s.day, s.day + 1)
        polls = sum(farm.polls[f, d - 1] for f in feeds for d in days)
        n304 = sum(farm.not_modified[f, d - 1] for f in feeds for d in days)
        done = sum(s.states[k] for k in TERMINAL)
        late = [x for d in days for x in lag.get(d, [])]
        rows.append((
            str(s.day), str(s.published), str(s.taken), str(s.states["stored"]),
            str(s.states["duplicate"]), str(s.states["failed"] + s.states["skipped"]),
            str(s.taken - done), f"{s.used_memory / 1024:.0f}", str(s.keys),
            f"{s.store_bytes / 1024:.0f}", f"{percentile(late, 0.95):.1f}",
            f"{polls / len(feeds) / len(days):.1f}", f"{n304}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    first = math.ceil(expiry_days(args)) + 1
    print(
        f"{args.outlets} outlets (+ a sitemap of {args.old} archive entries), {len(farm.items)} "
        f"articles over {args.days} simulated days of {args.day_seconds:g} s (originals "
        f"{args.rate:g}/s, {args.copies:.0%} republished); windows in days: retention "
        f"{args.retention:g}, dedup {args.dedup:g}, boilerplate {args.boilerplate:g}, max age "
        f"{args.max_age:g}; feeds list an article {args.feed_days:g} days; one worker "
        f"--beat, {args.concurrency} threads; {os.cpu_count()} cores. Rows: every "
        f"{every} day(s); polls per feed per day; p95 of the articles published those days"
    )
    print("\n".join(lines))
    twice = sum(1 for n in farm.requests.values() if n > 1)
    archive = sum(n for u, n in farm.requests.items() if "/archive/" in u)
    late = [x for v in lag.values() for x in v]
    print(
        f"\nURLs fetched more than once: {twice} (goal 0); archive entries fetched: {archive} "
        f"of {args.old} (goal 0); lost (no terminal outcome {drained:.0f} s after the last "
        f"publication): {len(lost)} of {len(farm.items)} (goal 0)"
    )
    print(
        f"appeared in its feed → terminal: p50 {percentile(late, 0.5):.1f} s, p95 "
        f"{percentile(late, 0.95):.1f} s, max {max(late, default=float('nan')):.1f} s "
        "(feeds polled every 1-4 s)"
    )
    asked, answered, expired = checked
    print(
        f"newsq status URL for {asked} URLs of days 1-2: {answered} answered with their "
        f"outcome, {expired} of them from the store alone (ledger entry expired)"
    )
    tail = [s for s in snaps if s.day >= first]
    if len(tail) < 2 or tail[-1].taken <= tail[0].taken:
        print(f"Redis beyond the windows: not measured (fewer than two days after day {first})")
        return
    print(beyond(tail, args.dedup / 4))
    print(
        f"\nRedis keys by kind (MEMORY USAGE of each key), day {tail[0].day} and day "
        f"{tail[-1].day}:"
    )
    print(kinds_table(tail[0], tail[-1]))


def beyond(tail: list[Snapshot], generation: float) -> str:
    """Redis' growth per URL taken in after the windows filled: between two days a whole
    number of dedup generations apart (the index's filters come and go by generation),
    and the least-squares slope over every day."""
    first = tail[0]
    last = next((s for s in reversed(tail)
                 if abs((s.day - first.day) / generation - round((s.day - first.day) / generation))
                 < 1e-6), tail[-1])  # fmt: skip
    urls_in = max(1, last.taken - first.taken)
    used = (last.used_memory - first.used_memory) / urls_in
    owned = (last.owned - first.owned) / urls_in
    fit_used = _slope([(s.taken, s.used_memory) for s in tail])
    fit_owned = _slope([(s.taken, s.owned) for s in tail])
    return (
        f"Redis beyond the windows, day {first.day} → {last.day} ({urls_in} URLs taken in): "
        f"used_memory {used:+.1f} bytes per URL (least squares over days {first.day}-"
        f"{tail[-1].day}: {fit_used:+.1f}); the keys' own bytes (MEMORY USAGE) {owned:+.1f} "
        f"(fit {fit_owned:+.1f}); keys {first.keys} → {last.keys}"
    )


def kinds_table(a: Snapshot, b: Snapshot) -> str:
    names = sorted(set(a.kinds) | set(b.kinds), key=lambda k: -b.kinds.get(k, (0, 0))[1])
    lines = [f"| kind | keys day {a.day} | KiB day {a.day} | keys day {b.day} | KiB day {b.day} |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name in names:
        (ka, ba), (kb, bb) = a.kinds.get(name, (0, 0)), b.kinds.get(name, (0, 0))
        lines.append(f"| {name} | {ka} | {ba / 1024:.1f} | {kb} | {bb / 1024:.1f} |")
    return "\n".join(lines)


def _failed(what: str, log: Path, lines: int = 30) -> str:
    """The message of a failed soak with the end of the worker's log: the log lives in
    a temporary folder that is gone once the bench exits."""
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    return "\n".join([f"soak: {what}; the worker's log ended:", *tail])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="simulated days")
    parser.add_argument("--day-seconds", type=float, default=4.0, help="seconds of one day")
    parser.add_argument("--quick", action="store_true",
                        help="15 days of 4 s, windows of 2-3 days (a minute)")  # fmt: skip
    parser.add_argument("--outlets", type=int, default=8, help="outlets, each with a feed")
    parser.add_argument("--rate", type=float, default=8.0, help="originals a second, all outlets")
    parser.add_argument("--copies", type=float, default=0.3, help="share republished elsewhere")
    parser.add_argument("--old", type=int, default=200, help="archive entries in the sitemap")
    parser.add_argument("--feed-days", type=float, default=5.0, help="days a feed lists an article")
    parser.add_argument("--retention", type=float, default=3.0, help="ledger retention, days")
    parser.add_argument("--dedup", type=float, default=5.0, help="dedup window, days")
    parser.add_argument("--boilerplate", type=float, default=5.0, help="boilerplate TTL, days")
    parser.add_argument("--max-age", type=float, default=7.0, help="NEWSQ_MAX_AGE_DAYS, days")
    parser.add_argument(
        "--dedup-capacity",
        type=int,
        default=1000,
        help="NEWSQ_DEDUP_CAPACITY: articles per dedup window, sized for the farm",
    )
    parser.add_argument("--host-rate", type=float, default=10.0, help="NEWSQ_HOST_RATE")
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="seconds to wait after the last day for every URL to end")  # fmt: skip
    parser.add_argument("--every-day", action="store_true", help="a row for every day")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.retention, args.dedup, args.boilerplate = 15, 2.0, 3.0, 3.0
        args.feed_days, args.max_age = 3.0, 5.0
    with tempfile.TemporaryDirectory(prefix="newsq-soak-") as folder:
        run(args, Path(folder))


if __name__ == "__main__":
    main()
