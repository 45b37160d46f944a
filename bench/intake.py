"""A big URL file enqueued as a user does it: ``newsq enqueue --urls FILE``.

    python -m bench.intake [--n 100000] [--hosts 500] [--repeat 3] [--tree DIR]...

A file of ``--n`` URLs over ``--hosts`` hosts is enqueued in a fresh process against a
redis-server started here (flushed before each run) and a fresh SQLite store: wall
time from exec to exit, the CPU seconds of the process, and when the first fetch
message reached the broker (a thread reads the queue's lists every 5 ms): what a
``newsq run --urls FILE``'s workers wait before their first fetch.

The anchor, in the same rounds: a bare Celery producer sending the same URLs, 8 to a
message as newsq packs them, one ``send_task`` each (Celery's default), with no
ledger, store or normalising. ``--tree DIR`` measures another checkout too (a worktree
of an older commit: the before of a change), alternated with this one.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import redis

from bench.startup import Tree, shim
from bench.tables import markdown, median_range
from newsq.config.celery import queue_keys

PREFIX = "newsq"  # the runs drop every NEWSQ_ variable but the broker and store

BARE = """
import sys
from celery import Celery
app = Celery(broker=sys.argv[1])
urls = [line.strip() for line in open(sys.argv[2]) if line.strip()]
with app.producer_or_acquire() as producer:
    for i in range(0, len(urls), 8):
        app.send_task("newsq.fetch_many", args=(urls[i : i + 8],), queue="fetch",
                      producer=producer)
"""


def url_file(path: Path, n: int, hosts: int) -> Path:
    """``n`` article URLs, host after host in turn, as a sitemap backlog's would be."""
    with path.open("w") as out:
        for i in range(n):
            out.write(f"https://outlet{i % hosts}.example/news/2026/{i}-story.html\n")
    return path


class Case:
    """One command measured over the rounds."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name, self.command, self.env = name, command, env
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.firsts: list[float] = []
        self.messages = 0

    def run(self, client: redis.Redis, work: Path) -> None:
        client.flushdb()
        store = work / "store.db"
        for leftover in work.glob("store.db*"):
            leftover.unlink()
        env = {**self.env, "NEWSQ_DATABASE_URL": f"sqlite:///{store}"}
        keys = [*queue_keys(PREFIX, "fetch"), "fetch"]  # the bare producer's has no prefix
        first: list[float] = []
        done = threading.Event()

        def watch(start: float) -> None:
            while not done.is_set():
                if sum(client.llen(k) for k in keys):
                    first.append(time.perf_counter() - start)
                    return
                time.sleep(0.005)

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        watcher = threading.Thread(target=watch, args=(start,), daemon=True)
        watcher.start()
        subprocess.run(self.command, env=env, cwd=work, check=True, stdout=subprocess.DEVNULL)
        self.walls.append(time.perf_counter() - start)
        done.set()
        watcher.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        self.firsts += first
        self.messages = sum(client.llen(k) for k in keys)


def table(cases: Sequence[Case], anchor: Case) -> str:
    rows = [["case", "wall s", "CPU s", "first message s", "messages", "wall / bare Celery"]]
    for case in cases:
        ratio = statistics.median(case.walls) / statistics.median(anchor.walls)
        cells = [median_range(v) for v in (case.walls, case.cpus, case.firsts)]
        rows.append([case.name, *cells, f"{case.messages:,}", f"{ratio:.2f}x"])
    return markdown(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="URLs in the file")
    parser.add_argument("--hosts", type=int, default=500, help="hosts they are spread over")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every case")
    parser.add_argument("--tree", action="append", default=[], type=Path,
                        help="another newsq checkout to measure too (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    from newsq.workers.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="newsq-intake-"))
    urls = url_file(work / "urls.txt", args.n, args.hosts)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        trees = [Tree("newsq", None)]
        for i, tree in enumerate(args.tree):
            trees.append(Tree(tree.name or f"tree{i}", shim(tree.absolute(), work / f"shim{i}")))
        cases = [Case(f"{t.name} enqueue --urls",
                      [*t.command(), "enqueue", "--urls", str(urls)],
                      t.env(NEWSQ_BROKER_URL=server.url)) for t in trees]  # fmt: skip
        anchor = Case("bare Celery send_task", [sys.executable, "-c", BARE, server.url, str(urls)],
                      Tree("bare", None).env())  # fmt: skip
        print(f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, load "
              f"{os.getloadavg()[0]:.2f}; {args.n:,} URLs over {args.hosts} hosts, "
              f"{args.repeat} rounds", file=sys.stderr)  # fmt: skip
        every = [*cases, anchor]
        for round_ in range(args.repeat):
            for case in every if round_ % 2 == 0 else every[::-1]:
                case.run(client, work)
            print(f"round {round_ + 1} done", file=sys.stderr)
        client.close()
    shutil.rmtree(work, ignore_errors=True)
    print(table(every, anchor))


if __name__ == "__main__":
    main()
