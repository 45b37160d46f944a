"""The frontier under a kill: the worker holding a rate-limited host's URLs (and the
frontier's dispatcher lease) dies; its URLs go back, none lost, none stored twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from newsq.fetch import frontier
from newsq.fetch.politeness import fetch_tag
from tests.faults.harness import Workers, enqueue, finish, ledger_for, unacked_urls, wait_for
from tests.faults.site import Site

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RATE = 15  # requests/s of the site's one host: 245 URLs take ~16 s, most of them waiting


def test_sigkill_the_worker_holding_a_hosts_urls(site: Site, fault_env: dict[str, str],
                                                 tmp_path: Path) -> None:  # fmt: skip
    started = time.monotonic()
    env = {**fault_env, "NEWSQ_HOST_RATE": str(RATE), "NEWSQ_HOST_CONCURRENCY": "4"}
    prefix = env["NEWSQ_KEY_PREFIX"]
    client = redis.Redis.from_url(env["NEWSQ_BROKER_URL"])
    workers = Workers(env=env, logs=tmp_path)
    try:
        enqueue(site, env, tmp_path)
        workers.start()
        ledger = ledger_for(env)
        wait_for(ledger, site.urls, done=len(site.urls) // 4, timeout=120)
        waiting = frontier.waiting(client, prefix)
        assert sum(waiting.values()) > 50, f"the host's URLs are not in the frontier: {waiting}"
        holder = client.get(f"{fetch_tag(prefix)}:frontier:dispatcher")
        assert holder and f":{workers.procs['fetch'].pid}:".encode() in holder
        workers.kill(signal.SIGKILL, names=("fetch",))
        workers.wait(10, names=("fetch",))
        held = unacked_urls(client, prefix)  # the dispatched fetches it had taken
        parked = sum(frontier.waiting(client, prefix).values())
        workers.revive()  # a fresh fetch worker takes the lease over and the URLs on
        figures = finish(site, env, "sigkill_frontier_holder", started, workers=workers,
                         log_counts={"dispatcher_took_over": "took over"},
                         parked_at_kill=parked, in_flight_at_kill=len(held))  # fmt: skip
        assert figures["dispatcher_took_over"] >= 2  # the dead one, then the new one
        assert frontier.waiting(client, prefix) == {}
        assert not client.exists(f"{fetch_tag(prefix)}:frontier:due",
                                 f"{fetch_tag(prefix)}:frontier:hosts")  # fmt: skip
        assert max(site.requests.values()) <= 2  # a page fetched at most once more
    finally:
        workers.stop()
        client.close()
