"""A surge drill: machines added mid-surge, one paused past the visibility timeout and
resumed, one killed; at the end nothing lost and nothing stored twice.

``python -m bench.surge [--urls 20000] [--outlets 20] [--rate 8] [--threads 6]
[--step 45] [--visibility 20] [--quick]``

A site farm on loopback (``bench.soak_farm``: ``--outlets`` outlets, each on its own
127.0.0.N address where loopback aliases bind, every article request answered after
``--latency`` seconds, uniform) serves ``--urls`` articles, a share ``--copies`` of
them republished by another outlet (exact or edited copies: one story). They are
enqueued at once (``newsq enqueue --urls``), then workers are started as separate
machines would be: each ``newsq worker`` a process group of its own with its own node
name, on a shared Redis (a throwaway ``redis-server``) and store.

    step 1   one worker                           drain rate
    step 2   two workers                          drain rate
    step 3   four workers                         drain rate
    freeze   worker 2 SIGSTOPped past the visibility timeout (its tasks go to the
             others), then SIGCONTed (it must not store anything twice nor move a
             finished URL back)
    kill     worker 3 SIGKILLed with its tasks (they come back after the timeout)
    drain    until every URL is terminal in the store

Printed: the drain rate after each step, the request rate every host saw in its busiest
second (a sliding 1 s window, all workers together) against its limit (``--rate`` plus
the one request a burst of 1 allows), and at the end: URLs lost (not terminal), URLs
with more than one stored row, URLs whose ledger state differs from the store's,
exact copies stored as two stories, and Redis CPU per article (``INFO cpu``). Drain is
limited by the sites' latency: ``--threads`` fetches at once per worker, so N workers
should drain about N times as fast until the machine's cores run out (this one has two:
the process stage's CPU caps four workers).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis
import sqlalchemy as sa

from bench.soak_farm import Farm, Item
from newsq.ledger import Ledger
from newsq.records import TERMINAL
from newsq.store.database import Store, articles, urls
from newsq.urls import normalize
from newsq.workers.redis_server import RedisServer
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "surge"


@dataclass
class Phase:
    name: str
    workers: int
    seconds: float = 0.0
    done: int = 0

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def surge_items(count: int, outlets: int, copies: float, rng: random.Random) -> list[Item]:
    """``count`` article URLs over ``outlets``: originals, and a share ``copies`` of
    them republished by another outlet (half exact, half edited)."""
    items: list[Item] = []
    story = 0
    while len(items) < count:
        outlet = rng.randrange(outlets)
        items.append(Item(outlet, f"/news/{story}.html", 0.0, story, "original"))
        if len(items) < count and outlets > 1 and rng.random() < copies:
            other = (outlet + rng.randrange(1, outlets)) % outlets
            kind = "exact" if rng.random() < 0.5 else "edited"
            items.append(Item(other, f"/copy/{story}.html", 0.0, story, kind))
        story += 1
    rng.shuffle(items)
    return items


def worker_env(server: str, db: str, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NEWSQ_BROKER_URL": server,
        "NEWSQ_DATABASE_URL": db,
        "NEWSQ_KEY_PREFIX": PREFIX,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": f"{args.rate:g}",
        "NEWSQ_HOST_CONCURRENCY": str(max(4, args.threads * 4)),
        "NEWSQ_VISIBILITY_TIMEOUT": str(args.visibility),
        "NEWSQ_LOG_LEVEL": "INFO",  # Celery's "ready." line: when a worker takes work
        "PYTHONPATH": str(ROOT),
    })  # fmt: skip
    return env


def terminal(store: Store) -> int:
    query = sa.select(sa.func.count()).select_from(urls).where(urls.c.state.in_(TERMINAL))
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def busiest_second(times: list[float], *, sliding: bool = False) -> int:
    """Most requests in one clock second, or (``sliding``) in any window of one second:
    stricter, since a request reaches the site a little after its slot was granted."""
    if not sliding:
        return max(Counter(int(t) for t in times).values(), default=0)
    times = sorted(times)
    return max((bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def watch(store: Store, phase: Phase, seconds: float, total: int) -> None:
    start_done, started = terminal(store), time.monotonic()
    while time.monotonic() - started < seconds and terminal(store) < total:
        time.sleep(0.5)
    phase.seconds = time.monotonic() - started
    phase.done = terminal(store) - start_done


def run(args: argparse.Namespace, tmp: Path) -> None:
    rng = random.Random(args.seed)
    items = surge_items(args.urls, args.outlets, args.copies, rng)
    farm = Farm(args.outlets, items, feed_s=1e9, old=0, old_s=(0.0, 0.0), seed=args.seed)
    low, high = (float(x) for x in args.latency.split(","))
    farm.latency = (low, high)
    db = f"sqlite:///{tmp / 'surge.db'}"
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        stack.enter_context(farm.serve())
        farm.started = time.time()
        env = worker_env(server.url, db, args)
        listing = tmp / "urls.txt"
        listing.write_text("\n".join(farm.url(i) for i in items) + "\n")
        enqueue = subprocess.run(
            [sys.executable, "-m", "newsq", "enqueue", "--urls", str(listing)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if enqueue.returncode != 0:
            raise SystemExit(f"surge: enqueue failed: {enqueue.stderr.strip()}")
        client = redis.Redis.from_url(server.url)
        store = Store.from_url(db, create=False)
        cpu_before = redis_cpu(client)
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
               "--pool", "threads", "--concurrency", str(args.threads)]  # fmt: skip
        procs: list[subprocess.Popen[bytes]] = []

        logs: list[Path] = []
        ready: list[float] = []

        def start() -> None:
            logs.append(tmp / f"worker{len(procs) + 1}.log")
            command = [*cmd, "--beat"] if not procs else cmd  # beat: one per cluster
            procs.append(stack.enter_context(running(command, env, logs[-1])))

        def wait_ready(since: float) -> None:
            """Until every worker started logged Celery's ``ready.``; their start-up
            times (s from their start) go to ``ready``."""
            waiting = [log for log in logs if not _ready(log)]
            deadline = time.monotonic() + 120
            while waiting and time.monotonic() < deadline:
                time.sleep(0.05)
                for log in [log for log in waiting if _ready(log)]:
                    waiting.remove(log)
                    ready.append(time.monotonic() - since)
            if waiting:
                raise SystemExit(f"surge: {len(waiting)} workers never got ready")

        phases = [Phase("1 worker", 1), Phase("2 workers", 2), Phase("4 workers", 4)]
        started = time.monotonic()
        for phase in phases:
            since = time.monotonic()
            while len(procs) < phase.workers:
                start()
            wait_ready(since)
            watch(store, phase, args.step, len(items))
        frozen = Phase("worker 2 frozen", 3)
        os.killpg(procs[1].pid, signal.SIGSTOP)
        watch(store, frozen, args.visibility + 10, len(items))
        os.killpg(procs[1].pid, signal.SIGCONT)
        killed = Phase("worker 3 killed", 3)
        os.killpg(procs[2].pid, signal.SIGKILL)
        drain = Phase("drain", 3)
        watch(store, drain, args.timeout, len(items))
        wall = time.monotonic() - started
        cpu = redis_cpu(client) - cpu_before
        phases += [frozen, killed, drain]
        report(args, farm, items, store, client, phases, wall, cpu)
        print(f"| worker start to ready (s), median of {len(ready)} | "
              f"{sorted(ready)[len(ready) // 2]:.2f} |")  # fmt: skip


def report(args: argparse.Namespace, farm: Farm, items: list[Item], store: Store,
           client: redis.Redis, phases: list[Phase], wall: float, cpu: float) -> None:  # fmt: skip
    with store.engine.connect() as conn:
        outcomes = dict(conn.execute(sa.select(urls.c.url, urls.c.state)).all())
        rows = Counter(u for (u,) in conn.execute(sa.select(articles.c.url)))
        stories = dict(conn.execute(sa.select(articles.c.url, articles.c.story_id)).all())
    wanted = [normalize(farm.url(i)) for i in items]
    lost = [u for u in wanted if outcomes.get(u) not in TERMINAL]
    twice = [u for u, n in rows.items() if n > 1]
    live = Ledger(client, PREFIX).states(wanted)  # None: its entry expired (not here)
    ledger_off = sum(1 for u, st in zip(wanted, live, strict=True)
                     if st is not None and st != outcomes.get(u))  # fmt: skip
    missed = 0
    by_story: dict[int, list[Item]] = {}
    for item in items:
        by_story.setdefault(item.story, []).append(item)
    for group in by_story.values():
        exact = [i for i in group if i.kind in ("original", "exact")]
        if len(exact) == 2:
            ids = {stories.get(normalize(farm.url(i))) for i in exact}
            if None not in ids and len(ids) == 2:
                missed += 1
    stored = sum(1 for s in outcomes.values() if s in ("stored", "duplicate"))

    print(f"\n## Surge drill: {len(items)} URLs, {args.outlets} outlets, latency "
          f"{args.latency} s, {args.rate:g} requests/s per host, {args.threads} threads a "
          f"worker, visibility timeout {args.visibility} s\n")  # fmt: skip
    print("| step | workers running | seconds | URLs done | URLs/s | vs 1 worker |")
    print("|---|---:|---:|---:|---:|---:|")
    base = phases[0].rate or float("nan")  # drain rates from the store's outcomes
    for p in phases:
        if p.seconds >= 1:
            print(f"| {p.name} | {p.workers} | {p.seconds:.0f} | {p.done} | {p.rate:.1f} "
                  f"| {p.rate / base:.2f}x |")  # fmt: skip
    print("\n| host | requests | busiest clock second | busiest sliding second "
          "| limit + 1 | over |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|")
    worst = slide = 0
    cap = args.rate + 1
    for n, outlet in enumerate(farm.outlets):
        times = farm.hits.get(n, [])
        peak, peak_s = busiest_second(times), busiest_second(times, sliding=True)
        worst, slide = max(worst, peak), max(slide, peak_s)
        if n < 3 or peak > cap:
            print(f"| {outlet.base} | {len(times)} | {peak} | {peak_s} | {cap:g} "
                  f"| {'OVER' if peak > cap else 'no'} |")  # fmt: skip
    print(f"| all {len(farm.outlets)} hosts, busiest | | {worst} | {slide} | {cap:g} "
          f"| {'OVER' if worst > cap else 'no'} |")  # fmt: skip
    print("\n| check | value |")
    print("|---|---:|")
    print(f"| wall time, first worker to drained (s) | {wall:.0f} |")
    print(f"| URLs lost (not terminal) | {len(lost)} |")
    print(f"| URLs with more than one stored row | {len(twice)} |")
    print(f"| URLs whose ledger state is not the store's | {ledger_off} |")
    print(f"| exact copies stored as two stories | {missed} |")
    print(f"| articles (stored + duplicate) | {stored} |")
    print(f"| Redis CPU per article (ms) | {1000 * cpu / max(1, stored):.3f} |")
    ends = Counter(outcomes.values())
    print("\noutcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(ends.items())))


def _ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text(errors="replace")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.surge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--urls", type=int, default=20_000)
    parser.add_argument("--outlets", type=int, default=20)
    parser.add_argument("--rate", type=float, default=8.0, help="requests/s per host")
    parser.add_argument("--latency", default="0.2,0.5", help="LOW,HIGH seconds per answer")
    parser.add_argument("--threads", type=int, default=6, help="fetch threads per worker")
    parser.add_argument("--copies", type=float, default=0.1)
    parser.add_argument("--step", type=float, default=45.0, help="seconds per step")
    parser.add_argument("--visibility", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1800.0, help="most seconds to drain")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3,000 URLs, 20 s steps")
    parser.add_argument("--keep", type=Path, help="keep the store and worker logs here")
    args = parser.parse_args(argv)
    if args.quick:
        args.urls, args.step = 3000, 20.0
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, args.keep)
        return
    with tempfile.TemporaryDirectory(prefix="newsq-surge-") as folder:
        run(args, Path(folder))


if __name__ == "__main__":
    main()
