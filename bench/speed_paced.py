"""A paced enqueuer: local newsq workers fed one URL at a time at a steady rate.

    python bench/speed_paced.py RATE WORKERS FETCH_THREADS URL...

Starts the same local workers as ``newsq run`` (settings from the ``NEWSQ_*``
environment, the broker must be set), waits for a first URL to finish (the workers are
up), then enqueues the rest at RATE per second and waits until all are done. The
ledger's t_enq/t_done give the latency of a steady load.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from newsq.config.celery import FETCH_QUEUE, FETCH_TASK, make_app
from newsq.config.settings import get_settings
from newsq.ledger import Ledger
from newsq.records import TERMINAL
from newsq.workers.embedded import LocalCluster


def _wait(ledger: Ledger, urls: list[str], cluster: LocalCluster) -> None:
    pending = list(urls)
    while pending:
        states = ledger.states(pending)
        pending = [u for u, s in zip(pending, states, strict=True) if s not in TERMINAL]
        cluster.check_workers()
        time.sleep(0.05)


def main(rate: float, workers: int, fetch_threads: int, urls: list[str]) -> int:
    settings = get_settings()
    ledger = Ledger(redis.Redis.from_url(settings.broker_url or ""), settings.key_prefix)
    app = make_app(settings)
    kwargs = {"fetch_threads": fetch_threads} if fetch_threads else {}
    with LocalCluster(settings, workers=workers, **kwargs) as cluster:  # type: ignore[arg-type]
        cluster.start_workers()
        with app.producer_or_acquire() as producer:

            def send(url: str) -> None:
                ledger.enqueue([url])
                app.send_task(FETCH_TASK, args=(url,), queue=FETCH_QUEUE, producer=producer)

            send(urls[0])
            _wait(ledger, urls[:1], cluster)
            started = time.perf_counter()
            for i, url in enumerate(urls[1:]):
                pause = started + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                send(url)
        _wait(ledger, urls, cluster)
        cluster.stop_workers()
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
