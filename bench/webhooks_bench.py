"""What webhook delivery costs per event, next to bare POSTs to the same receiver.

    python -m bench.webhooks_bench [--n 2000] [--rounds 3] [--latency MS] [--concurrency N]

A receiver on loopback (http.server in a thread, answering 200 after ``--latency`` ms)
and, alternated each round so the machine's other load falls on both:

- ``deliverer``: a :class:`newsq.webhooks.Deliverer` (lease on a private Redis, store a
  SQLite file) sends the ``--n`` events of a fresh store, one at a time in id order,
  reading them in batches and moving the cursor in the store after each 2xx;
- ``bare POSTs``: one httpx client POSTing the same bodies, unsigned, one at a time: the
  receiver's and HTTP's own cost, the anchor.

Prints events/s of each, best and median of the rounds, and the deliverer's extra ms
per event.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

from bench import serve
from newsq.config.settings import AllowPrivate
from newsq.store import cursors
from newsq.store.database import Store
from newsq.store.events import read
from newsq.webhooks import Deliverer, WebhookConfig
from newsq.webhooks.deliver import body_of
from newsq.workers.redis_server import RedisServer

_COUNT = threading.Lock()


class _Receiver(serve.Handler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
    latency = 0.0
    taken = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.latency:
            time.sleep(self.latency)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with _COUNT:
            _Receiver.taken += 1


def _fill(store: Store, n: int) -> None:
    for i in range(n):
        url = f"https://news.example/{i}"
        row = {"url": url, "final_url": url, "canonical_url": None, "title": "T",
               "author": None, "published": None, "language": "en", "site": "example",
               "text": "word " * 400, "content_hash": f"h-{url}", "story_id": url,
               "duplicate_of": None, "similarity": 1.0, "match": "new",
               "fetched_at": datetime.now(UTC)}  # fmt: skip
        store.save_article(row, {"url": url, "state": "stored"})


def _deliverer(store: Store, url: str, broker: str, n: int, prefix: str,
               concurrency: int) -> float:  # fmt: skip
    """Seconds per event for a deliverer (``concurrency`` stories at once) to send all ``n``."""
    config = WebhookConfig(url=url, secret="bench", allow=AllowPrivate(all=True),
                           key_prefix=prefix, concurrency=concurrency)  # fmt: skip
    client = redis.Redis.from_url(broker)
    _Receiver.taken = 0
    started = time.perf_counter()
    deliverer = Deliverer(config, store, client).start()
    while _Receiver.taken < n:
        time.sleep(0.002)
    took = time.perf_counter() - started
    deliverer.stop()
    client.close()
    assert cursors.load(store, config.target).delivered == n
    return took / n


def _bare(store: Store, url: str, n: int) -> float:
    bodies = [body_of(event) for event in read(store)]
    with httpx.Client(trust_env=False) as client:
        started = time.perf_counter()
        for body in bodies:
            client.post(url, content=body, headers={"Content-Type": "application/json"})
        return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="receiver's ms per POST")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="the deliverer's stories at once"
    )
    args = parser.parse_args()
    _Receiver.latency = args.latency / 1000
    server = serve.start(_Receiver)
    url = f"{serve.base_url(server)}/hook"
    times: dict[str, list[float]] = {"deliverer": [], "bare POSTs": []}
    redis_server = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                store = Store.from_url(f"sqlite:///{Path(tmp) / f'bench{r}.db'}")
                _fill(store, args.n)
                times["bare POSTs"].append(_bare(store, url, args.n))
                times["deliverer"].append(_deliverer(store, url, redis_server.url, args.n,
                                                     f"bench{r}", args.concurrency))  # fmt: skip
                store.close()
    finally:
        redis_server.stop()
        serve.stop(server)
    print(f"{args.n} events x {args.rounds} rounds, receiver latency {args.latency:g} ms, "
          f"deliverer concurrency {args.concurrency}")  # fmt: skip
    print(f"| {'side':10s} | best events/s | median events/s |")
    print("|---|---|---|")
    for side, took in times.items():
        print(f"| {side:10s} | {1 / min(took):.0f} | {1 / statistics.median(took):.0f} |")
    extra = statistics.median(times["deliverer"]) - statistics.median(times["bare POSTs"])
    print(f"deliverer's extra per event (medians): {1000 * extra:.2f} ms")


if __name__ == "__main__":
    main()
