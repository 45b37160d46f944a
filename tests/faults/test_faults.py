"""Kill anything at any moment: lose nothing, store nothing twice.

Each case runs real worker processes over 245 URLs of a local site with 50–200 ms
latency (220 distinct stories, 20 exact copies, 5 dead links), injects one fault
mid-batch, then checks the end state (``check_end_state``). Measurements are printed
as ``FAULTS {json}`` lines, which ``bench/faults_report.py`` collects.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import redis

from newsq.config.celery import make_app
from newsq.config.settings import Settings
from newsq.workers.redis_server import RedisServer
from tests.faults.conftest import VISIBILITY_TIMEOUT
from tests.faults.harness import (
    CHILD_DEATHS,
    FINISH,
    Workers,
    check_end_state,
    enqueue,
    finish,
    ledger_for,
    unacked_urls,
    wait_for,
)
from tests.faults.site import Site
from tests.servers import PostgresServer

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def mid_batch(site: Site, env: dict[str, str], share: float = 0.3) -> None:
    """Wait until ``share`` of the URLs are done: the fault lands mid-batch."""
    urls = site.urls
    done = wait_for(ledger_for(env), urls, done=int(len(urls) * share), timeout=120)
    assert done < len(urls), "the batch finished before the fault could land"


def test_sigkill_whole_worker_then_fresh_worker(
    site: Site, fault_env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    started = time.monotonic()
    enqueue(site, fault_env, tmp_path)
    workers.start()
    mid_batch(site, fault_env)
    client = redis.Redis.from_url(fault_env["NEWSQ_BROKER_URL"])
    prefix = fault_env["NEWSQ_KEY_PREFIX"]
    ledger = ledger_for(fault_env)
    workers.kill(signal.SIGKILL)
    workers.wait(10)
    killed_at = time.time()
    held = unacked_urls(client, prefix)
    held = {u for u, s in zip(held, ledger.states(held), strict=True) if s not in ("stored",
            "duplicate", "skipped", "failed")}  # fmt: skip
    assert held, "the kill landed when no task was in flight"
    workers.start()
    # when each task the dead worker held is taken again
    again: dict[str, float] = {}
    deadline = time.monotonic() + VISIBILITY_TIMEOUT + 60
    while len(again) < len(held) and time.monotonic() < deadline:
        for url in held - set(again):
            record = ledger.get(url) or {}
            if float(record.get("t_upd", 0)) > killed_at:
                again[url] = float(record["t_upd"]) - killed_at
        time.sleep(0.1)
    assert set(again) == held, f"never delivered again: {sorted(held - set(again))[:5]}"
    finish(
        site,
        fault_env,
        "sigkill_worker",
        started,
        in_flight=len(held),
        redelivered_max_s=round(max(again.values()), 1),
        visibility_timeout=VISIBILITY_TIMEOUT,
    )


def test_sigkill_one_pool_child(site: Site, fault_env: dict[str, str], workers: Workers,
                                tmp_path: Path) -> None:  # fmt: skip
    started = time.monotonic()
    enqueue(site, fault_env, tmp_path)
    workers.start()
    mid_batch(site, fault_env, 0.2)
    killed: set[int] = set()
    for _ in range(3):
        # a child killed before may linger unreaped in the list, and one just forked may
        # not be up yet (billiard does not report its death): kill only working ones
        pids = [p for p in workers.pool_children("process")
                if p not in killed and age(p) > 1.0]  # fmt: skip
        if pids:
            signal_pid(pids[0])
            killed.add(pids[0])
        time.sleep(2)
    assert killed, "no pool child to kill"
    figures = finish(site, fault_env, "sigkill_pool_child", started, workers=workers,
                     log_counts=CHILD_DEATHS, children_killed=len(killed))  # fmt: skip
    assert figures["children_exited"] >= 1, "no child's death was found in the logs"


def age(pid: int) -> float:
    """Seconds since process ``pid`` started; 0 when it is gone."""
    try:
        return time.time() - psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def signal_pid(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_sigterm_worker_hands_back_work(site: Site, fault_env: dict[str, str],
                                        workers: Workers, tmp_path: Path) -> None:  # fmt: skip
    started = time.monotonic()
    enqueue(site, fault_env, tmp_path)
    workers.start()
    mid_batch(site, fault_env)
    for proc in workers.procs.values():
        proc.send_signal(signal.SIGTERM)  # the main process only, as an orchestrator does
    shutdown_s = workers.wait(120)
    client = redis.Redis.from_url(fault_env["NEWSQ_BROKER_URL"])
    left = client.hlen(f"{fault_env['NEWSQ_KEY_PREFIX']}:q:unacked")
    assert left == 0, f"{left} messages still held after a warm shutdown"
    workers.start()
    finish(site, fault_env, "sigterm_worker", started, shutdown_s=round(shutdown_s, 1))


STUCK_AFTER = 2 * VISIBILITY_TIMEOUT


def test_redis_restarted_mid_batch(site: Site, fault_env: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    server = RedisServer(appendonly=True).start()
    # a message popped by a worker the instant Redis went down is in no queue and not
    # yet in the unacked hash: only beat's stuck-URL sweep sends it again
    env = {**fault_env, "NEWSQ_BROKER_URL": server.url, "NEWSQ_STUCK_AFTER": str(STUCK_AFTER)}
    workers = Workers(env=env, logs=tmp_path, beat=True)
    restarted: RedisServer | None = None
    try:
        enqueue(site, env, tmp_path)
        workers.start()
        mid_batch(site, env)
        server.stop(keep_dir=True)
        time.sleep(3)
        restarted = RedisServer(appendonly=True, port=server.port, dir=server.dir).start()
        # a kombu 5.7 consumer (prefork or threads) may die on the lost connection:
        # Channel.close drops its pools, then QoS.restore_unacked_once builds a new one
        # from a connection already gone (AttributeError: ... 'hostname'). Its unacked
        # messages come back by the visibility timeout; production's supervisor
        # restarts the worker, and so does this
        revived = 0
        deadline = time.monotonic() + FINISH
        ledger = ledger_for(env)
        while time.monotonic() < deadline:
            revived += workers.revive()
            if wait_for(ledger, site.urls, done=len(site.urls), timeout=1) == len(site.urls):
                break
        finish(site, env, "redis_restart", started, workers=workers, down_s=3,
               workers_restarted=revived, log_counts={"stuck_sweeps": "re-enqueueing",
               "consumer_crashes": "Unrecoverable error"})  # fmt: skip
    finally:
        workers.stop()
        (restarted or server).stop()


def test_postgres_down_for_ten_seconds(
    site: Site,
    fault_env: dict[str, str],
    workers: Workers,
    fault_pg: PostgresServer,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    enqueue(site, fault_env, tmp_path)
    workers.start()
    mid_batch(site, fault_env)
    fault_pg.stop(keep_dir=True)
    try:
        time.sleep(10)
    finally:
        fault_pg.start()
    finish(site, fault_env, "postgres_down_10s", started, down_s=10)


def test_fetch_hanging_past_its_time_limit(site: Site, fault_env: dict[str, str],
                                           tmp_path: Path) -> None:  # fmt: skip
    """A fetch stalls past the task's soft time limit once: retried, then stored."""
    started = time.monotonic()
    env = {**fault_env, "NEWSQ_FETCH_TIME_LIMIT": "2", "NEWSQ_FETCH_TIMEOUT": "30"}
    site.hang = {f"/story/{n}": 6.0 for n in range(30, 40)}
    workers = Workers(env=env, logs=tmp_path, fetch_pool="prefork", fetch_concurrency=6)
    try:
        enqueue(site, env, tmp_path)
        workers.start()
        figures = finish(site, env, "fetch_past_time_limit", started, workers=workers,
                         log_counts={"soft_limit_hits": "time limit exceeded"},
                         hung=len(site.hang))  # fmt: skip
        assert all(site.requests[p] >= 2 for p in site.hang)
        assert figures["soft_limit_hits"] >= len(site.hang)
    finally:
        workers.stop()


def test_same_message_delivered_twice(site: Site, fault_env: dict[str, str], workers: Workers,
                                      tmp_path: Path) -> None:  # fmt: skip
    started = time.monotonic()
    enqueue(site, fault_env, tmp_path)
    app = make_app(Settings.from_env(fault_env))
    with app.producer_or_acquire() as producer:
        for url in site.urls:  # every fetch message a second time
            app.send_task("newsq.fetch", args=(url,), queue="fetch", producer=producer)
    workers.start()
    finish(site, fault_env, "duplicate_fetch_message", started, sent_twice=len(site.urls))
    # and every process message again once all is done: nothing may change
    with app.producer_or_acquire() as producer:
        for url in site.urls:
            app.send_task("newsq.process", args=(url,), queue="process", producer=producer)
    client = redis.Redis.from_url(fault_env["NEWSQ_BROKER_URL"])
    queue = f"{fault_env['NEWSQ_KEY_PREFIX']}:q:process"
    deadline = time.monotonic() + 60
    while client.llen(queue) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    check_end_state(site, fault_env)
