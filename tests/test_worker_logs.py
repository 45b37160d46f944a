"""A worker's log at INFO says what happened to URLs, not the noise of its libraries:
no alembic plugin lines at start, no "succeeded" line for a fetch put off for its host."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import redis
from corpus_server import corpus, serve_pages
from processes import running

from newsq.ledger import Ledger
from tests.cli import local_env, run_newsq

pytestmark = pytest.mark.slow


def test_worker_log_has_no_alembic_setup_nor_put_off_successes(
    redis_url: str, redis_client: redis.Redis, key_prefix: str, sqlite_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    pages = {f"/a/{i}": html for i, (html, _) in enumerate(list(corpus().values())[:3])}
    env = {**local_env(redis_url, key_prefix, sqlite_url, NEWSQ_FETCH_BATCH="1",
                       NEWSQ_LOG_LEVEL="INFO", NEWSQ_LOG_FORMAT="json"),
           "NEWSQ_HOST_RATE": "4"}  # fmt: skip
    log = tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "newsq", "worker", "--pool", "threads", "--concurrency", "4"]
    with serve_pages(pages) as base, running(cmd, env, log, tmp_path):
        urls = [base + path for path in pages]
        assert run_newsq("enqueue", *urls, env=env, timeout=60).returncode == 0
        ledger, deadline = Ledger(redis_client, key_prefix), time.monotonic() + 60
        while not all(s in ("stored", "duplicate") for s in ledger.states(urls)):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    messages = [r["msg"] for r in records]
    received = [m for m in messages if m.startswith("Task newsq.fetch[") and "received" in m]
    succeeded = [m for m in messages if m.startswith("Task newsq.fetch[") and "succeeded" in m]
    assert len(received) > len(urls), "no fetch was put off: the host rate did not bite"
    assert len(succeeded) == len(urls), succeeded  # one per URL: the ones that fetched it
    assert not [m for m in messages if "setup plugin" in m]
    assert not [r for r in records if r["logger"].startswith("alembic")]
