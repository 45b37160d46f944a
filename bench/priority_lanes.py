"""Two ways to put fresh messages ahead of a backlog on Celery's Redis transport.

``python -m bench.priority_lanes [--backlog 3000] [--fresh 20]``

One Celery worker (8 threads, prefetch 1 a thread, acks late: newsq's delivery
settings) and a task that sleeps 20 ms, on a throwaway redis-server. ``--backlog``
messages are queued first, then ``--fresh`` more, one every 0.2 s, while the worker
works through the backlog. Per way: how long a fresh message waited until its task
started, and the backlog left when the last one was sent.

    fifo      one queue: the fresh messages behind the backlog
    queues    ``fetch`` and ``fetch.bulk``, consumed in that order (kombu's
              ``queue_order_strategy: priority``); the backlog in ``fetch.bulk``
    priority  one queue, the backlog sent with priority 9 and
              ``priority_steps: [0, 9]``: kombu keeps it in a second list

Nothing of newsq runs here but its Redis server; ``bench.priority`` measures newsq.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

import redis
from celery import Celery

from newsq.workers.redis_server import RedisServer

WAYS = ("fifo", "queues", "priority")
PREFIX = "lanes:q:"
TASK_S = 0.02
LISTS = [f"{PREFIX}fetch", f"{PREFIX}fetch.bulk", f"{PREFIX}fetch\x06\x169"]  # any way's


def waiting(client: redis.Redis) -> int:
    return sum(int(client.llen(key)) for key in LISTS)


def make(way: str, url: str) -> tuple[Celery, list[str]]:
    """The app of one way, and the queues its worker consumes, in order."""
    options: dict[str, Any] = {"global_keyprefix": PREFIX}
    queues = ["fetch"]
    if way == "queues":
        options["queue_order_strategy"] = "priority"
        queues = ["fetch", "fetch.bulk"]
    elif way == "priority":
        options["priority_steps"] = [0, 9]
    app = Celery("lanes", broker=url)
    app.conf.update(broker_transport_options=options, task_acks_late=True,
                    worker_prefetch_multiplier=1, task_ignore_result=True,
                    worker_hijack_root_logger=False)  # fmt: skip

    @app.task(name="work")
    def work(sent: float, fresh: bool) -> None:
        if fresh:
            redis.Redis.from_url(url).rpush("lanes:waited", time.time() - sent)
        time.sleep(TASK_S)

    return app, queues


def one_way(way: str, url: str, backlog: int, fresh: int) -> tuple[list[float], int]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    app, queues = make(way, url)
    bulk: dict[str, Any] = {"queue": queues[-1]}
    if way == "priority":
        bulk["priority"] = 9
    with app.producer_or_acquire() as producer:
        for _ in range(backlog):
            app.send_task("work", args=(time.time(), False), producer=producer, **bulk)
    cmd = [sys.executable, "-m", "bench.priority_lanes", "--worker", way, "--url", url]
    worker = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        while waiting(client) >= backlog:
            time.sleep(0.05)  # the worker has started on the backlog
        for _ in range(fresh):
            app.send_task("work", args=(time.time(), True), queue="fetch")
            time.sleep(0.2)
        left = waiting(client)
        deadline = time.monotonic() + 5
        while client.llen("lanes:waited") < fresh and time.monotonic() < deadline:
            time.sleep(0.1)
        waited = [float(x) for x in client.lrange("lanes:waited", 0, -1)]
    finally:
        worker.terminate()
        worker.wait(30)
        client.close()
    return waited, left


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=3000)
    parser.add_argument("--fresh", type=int, default=20)
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # the worker of one way, started by the bench itself
        app, queues = make(args.worker, args.url)
        app.worker_main(["worker", "-Q", ",".join(queues), "-P", "threads", "-c", "8",
                         "--without-gossip", "--without-mingle", "-l", "error"])  # fmt: skip
        return
    rows = []
    with RedisServer() as server:
        for way in WAYS:
            waited, left = one_way(way, server.url, args.backlog, args.fresh)
            done = f"{len(waited)} of {args.fresh}"
            if waited:
                waits = f"{1000 * statistics.median(waited):.0f} / {1000 * max(waited):.0f}"
            else:
                waits = "-"
            rows.append(f"| {way} | {done} | {waits} | {left} of {args.backlog} |")
    print(f"{args.backlog} backlog messages of {1000 * TASK_S:.0f} ms, {args.fresh} fresh "
          "ones, one every 0.2 s; one worker of 8 threads")  # fmt: skip
    print("| way | fresh started | fresh waited p50 / max ms | backlog left after the last |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
