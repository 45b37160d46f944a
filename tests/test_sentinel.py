"""The broker (and the state) behind Redis Sentinel: real Sentinels, a real failover."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from newsq.config.celery import make_app
from newsq.config.settings import Settings
from newsq.connections import state_redis
from newsq.ledger import Ledger
from newsq.records import TERMINAL
from tests.cli import local_env, store_outcome
from tests.corpus_server import corpus, serve_pages
from tests.servers import SentinelGroup


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    sentinels = SentinelGroup().start()
    try:
        yield sentinels
    finally:
        sentinels.stop()


def test_celery_asks_the_sentinels_for_the_master_newsq_names(group: SentinelGroup) -> None:
    settings = Settings.from_env({"NEWSQ_BROKER_URL": group.url, "NEWSQ_SENTINEL_MASTER": "newsq"})
    app = make_app(settings)
    assert app.conf.broker_transport_options["master_name"] == "newsq"
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        served_by = conn.default_channel.client.info("server")["tcp_port"]
    assert served_by == group.master.port
    app.close()


def test_the_state_client_follows_the_master_through_a_failover(group: SentinelGroup) -> None:
    settings = Settings.from_env({"NEWSQ_BROKER_URL": group.url, "NEWSQ_STATE_URL": group.url,
                                  "NEWSQ_SENTINEL_MASTER": "newsq"})  # fmt: skip
    client = state_redis(settings, socket_timeout=2)
    client.set("before", "1")
    assert redis.Redis(port=group.master.port).get("before") == b"1"
    deadline = time.monotonic() + 5
    while redis.Redis(port=group.replica.port).get("before") is None:  # replicated
        assert time.monotonic() < deadline
        time.sleep(0.01)
    group.kill_master()
    failed = 0
    while True:  # what a task does: a lost connection is a retry
        try:
            client.set("after", "1")
            break
        except redis.ConnectionError:
            failed += 1
            assert failed < 50
            time.sleep(0.1)
    new_master = redis.Redis(port=group.master.port)
    assert new_master.get("after") == b"1" and new_master.get("before") == b"1"
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["failover", "kill"])
def test_a_run_survives_the_failover_of_its_brokers_master(
    group: SentinelGroup, redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path,
    how: str,
) -> None:  # fmt: skip
    """A quarter of the way through a run the Sentinels fail the broker's master over
    (``SENTINEL FAILOVER``: its replica promoted, its clients cut off; or the master
    SIGKILLed and its replica promoted) and the workers carry on with the new one: every
    URL ends in a terminal state within the run, none is stored twice. Killed, the
    master cannot take back the messages the workers held; they give them back to the
    new one (else they would wait out the hour's visibility timeout); a message it had
    not replicated is lost, and the run sends its URL again (``newsq.recovery``). The
    state is on a plain Redis of its own, so the failover hits only the broker."""
    pages = corpus()
    served = {f"/a/{pid}": html for pid, (html, _) in pages.items()}
    env = local_env(redis_url, key_prefix, sqlite_url, NEWSQ_SENTINEL_MASTER=group.name)
    env.update(NEWSQ_BROKER_URL=group.url, NEWSQ_STATE_URL=redis_url)
    ledger = Ledger(redis.Redis.from_url(redis_url), key_prefix)
    with serve_pages(served, delay=0.25) as base:
        urls = [f"{base}/a/{pid}" for pid in sorted(pages)[:48]]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        cmd = [sys.executable, "-m", "newsq", "run", "--urls", str(tmp_path / "urls.txt"),
               "--workers", "2", "--fetch-threads", "2", "--timeout", "90"]  # fmt: skip
        with subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as run:  # fmt: skip
            deadline = time.monotonic() + 60
            while (done := _terminal(ledger)) < len(urls) // 4:
                assert run.poll() is None and time.monotonic() < deadline, run.stderr
                time.sleep(0.05)
            if how == "failover":
                group.failover()
            else:
                group.kill_master()
            _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert done < len(urls)  # the failover came mid-run
    states, stored = store_outcome(sqlite_url)
    assert set(states) == set(urls) and set(states.values()) <= TERMINAL
    assert len(stored) == len(set(stored)) > len(urls) // 2  # nothing stored twice
    counts = ledger.counts()
    assert counts["queued"] == counts["fetching"] == counts["fetched"] == 0
    assert _terminal(ledger) == len(urls)


def _terminal(ledger: Ledger) -> int:
    return sum(n for state, n in ledger.counts().items() if state in TERMINAL)
