"""A URL that kills its worker process every time it is fetched: poison, then retried.

The site SIGKILLs the prefork fetch child that requests one chosen page (found by the
TCP port of its connection), every time, as a page that crashes the HTTP stack or
exhausts memory would. The URL must be delivered again after each crash, end
``failed``/``poison`` after ``NEWSQ_MAX_DELIVERIES`` deliveries, be listed by
``newsq status --dead``, and end stored once ``newsq retry URL`` sends it again with
the killer gone; the rest of the batch must not notice.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    CHILD_DEATHS,
    FINISH,
    Workers,
    check_end_state,
    enqueue,
    finish,
    holder_of,
    ledger_for,
    newsq,
    wait_for,
)
from tests.faults.site import Site

pytestmark = [pytest.mark.faults, pytest.mark.slow]

POISON_PATH = "/story/150"  # a story without a /copy/ twin
MAX_DELIVERIES = 3


def test_poison_url_ends_dead_then_retry_stores_it(site: Site, fault_env: dict[str, str],
                                                   tmp_path: Path) -> None:  # fmt: skip
    started = time.monotonic()
    env = {**fault_env, "NEWSQ_MAX_DELIVERIES": str(MAX_DELIVERIES)}
    workers = Workers(env=env, logs=tmp_path, fetch_pool="prefork", fetch_concurrency=4)
    poison = site.base + POISON_PATH
    killed: list[int] = []

    def kill_its_fetcher(path: str, port: int) -> None:
        if path != POISON_PATH:
            return
        pid = holder_of(port, workers.pool_children("fetch"))
        if pid is not None:  # else the counts below fail: no child held the connection
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    site.on_request = kill_its_fetcher
    try:
        enqueue(site, env, tmp_path)
        workers.start()
        # 1. every other URL ends as it should; the poison URL ends failed/poison
        wait_for(ledger_for(env), site.urls, done=len(site.urls), timeout=FINISH)
        figures = finish(site, env, "poison_url", started, poison_ok={poison}, workers=workers,
                         log_counts=CHILD_DEATHS, killed=len(killed))  # fmt: skip
        assert figures["children_exited"] >= MAX_DELIVERIES
        workers.start()  # finish stopped them to read their logs
        record = ledger_for(env).get(poison) or {}
        assert (record.get("state"), record.get("reason")) == ("failed", "poison"), record
        assert len(killed) == MAX_DELIVERIES, f"killed {len(killed)} times"
        assert len(set(killed)) == MAX_DELIVERIES, "a killed child was not replaced"
        assert site.requests[POISON_PATH] == MAX_DELIVERIES

        # 2. the real CLI lists it as dead and shows why
        dead = newsq("status", "--dead", env=env)
        assert dead.returncode == 0, dead.stderr
        assert json.loads(dead.stdout)["dead"] == [poison]
        status = json.loads(newsq("status", poison, env=env).stdout)
        assert (status["state"], status["reason"]) == ("failed", "poison")

        # 3. with the killer gone, a retry stores it, and nothing else changes
        site.on_request = None
        retried = newsq("retry", poison, env=env)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == "re-enqueued 1"
        assert wait_for(ledger_for(env), [poison], done=1, timeout=60) == 1
        assert ledger_for(env).states([poison]) == ["stored"]
        check_end_state(site, env)
        assert json.loads(newsq("status", "--dead", env=env).stdout)["dead"] == []
    finally:
        site.on_request = None
        workers.stop()
