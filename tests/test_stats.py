"""``newsq stats --once`` on a known state, and the throughput series behind its rates."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from newsq.config.celery import queue_keys
from newsq.ledger import Ledger
from newsq.metrics import Metrics
from newsq.store.database import Store
from newsq.throughput import Throughput
from tests.cli import newsq_env, run_newsq


def test_throughput_counts_only_the_window(redis_client: redis.Redis, key_prefix: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The ledger's terminal moves write the series; a move that changes nothing does not."""
    ledger = Ledger(redis_client, key_prefix)
    series = Throughput(lambda: redis_client, key_prefix)
    now = 1_800_000_000.0
    moves = ((5, "stored"), (30, "stored"), (59, "duplicate"), (61, "stored"), (200, "failed"))
    urls = [f"https://a.example/{i}" for i in range(len(moves))]
    ledger.enqueue(urls)
    for url, (ago, state) in zip(urls, moves, strict=True):
        monkeypatch.setattr(time, "time", lambda ago=ago: now - ago)
        ledger.move(url, state)
        ledger.move(url, "failed")  # already terminal: left as it is, not counted again
    monkeypatch.undo()
    assert series.counts(300, now=now)["stored"] == 0  # counted in this process until...
    ledger.flush()  # ...its recorder adds them, once a second
    assert series.counts(60, now=now) == {"stored": 2, "duplicate": 1, "failed": 0, "skipped": 0}
    assert series.counts(120, now=now)["stored"] == 3
    rates = series.rates(60, now=now)
    assert rates["articles"] == 3 / 60 and rates["urls"] == 3 / 60
    keys = list(redis_client.scan_iter(match=f"{{{key_prefix}}}:tput:*"))
    assert keys and all(0 < redis_client.ttl(k) <= 300 for k in keys)


def _article(url: str, story: str, dup_of: str | None) -> dict[str, object]:
    return {
        "url": url, "final_url": url, "canonical_url": None, "title": f"Title of {story}",
        "author": None, "published": None, "language": "en", "site": url.split("/")[2],
        "text": None if dup_of else "text", "content_hash": f"h-{url}", "story_id": story,
        "duplicate_of": dup_of, "similarity": 0.9 if dup_of else 1.0,
        "match": "near" if dup_of else "new", "fetched_at": datetime.now(UTC),
    }  # fmt: skip


def test_stats_once_prints_a_known_state(redis_url: str, redis_client: redis.Redis,
                                         key_prefix: str, sqlite_url: str) -> None:  # fmt: skip
    ledger = Ledger(redis_client, key_prefix)
    store = Store.from_url(sqlite_url)
    metrics = Metrics()
    stored = [f"https://a.example/{i}" for i in range(4)]
    copies = ["https://b.example/0", "https://c.example/0"]
    failed = ["https://bad.example/1", "https://bad.example/2", "https://ok.example/9"]
    skipped, waiting = ["https://a.example/video"], ["https://a.example/later"]
    ledger.enqueue(stored + copies + failed + skipped + waiting)
    for i, url in enumerate(stored):
        store.save_article(_article(url, f"s{i}", None), {"url": url, "state": "stored"})
        ledger.move(url, "stored", story_id=f"s{i}")
        metrics.outcome("stored", None)
    for url in copies:
        store.save_article(_article(url, "s0", stored[0]), {"url": url, "state": "duplicate"})
        ledger.move(url, "duplicate", story_id="s0")
        metrics.outcome("duplicate", None)
    for url in failed:
        store.record_outcome({"url": url, "state": "failed", "reason": "http_error"})
        ledger.move(url, "failed", reason="http_error")
        metrics.outcome("failed", "http_error")
    ledger.move(skipped[0], "skipped", reason="no_content")
    metrics.outcome("skipped", "no_content")
    ledger.flush()  # the throughput series, as a worker adds it once a second
    fetch_fresh, fetch_bulk = queue_keys(key_prefix, "fetch")
    redis_client.rpush(fetch_fresh, "m1", "m2")
    redis_client.rpush(fetch_bulk, "m3")
    store.close()

    env = newsq_env(NEWSQ_BROKER_URL=redis_url, NEWSQ_KEY_PREFIX=key_prefix,
                    NEWSQ_DATABASE_URL=sqlite_url, COLUMNS="160")  # fmt: skip
    done = run_newsq("stats", "--once", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout

    def value(label: str) -> str:
        match = re.search(rf"{re.escape(label)}\s+(\S+)", out)
        assert match, f"{label!r} not in:\n{out}"
        return match.group(1)

    assert re.search(r"queue fetch \(waiting / taken\)\s+3 / 0\s", out), out
    assert re.search(r"queue process \(waiting / taken\)\s+0 / 0\s", out), out
    assert re.search(r"fetch waiting, fresh / bulk\s+2 / 1\s", out), out
    assert re.search(r"process waiting, fresh / bulk\s+0 / 0\s", out), out
    # 6 stored or duplicate, all within the last seconds: over the shortest span, 5 s
    assert value("articles/s (last min)") == "1.2"
    assert value("dedup ratio") == "33.3%"
    assert value("stored") == "4" and value("duplicate") == "2" and value("queued") == "1"
    assert value("failed, http error") == "3" and value("skipped, no content") == "1"
    assert value("bad.example") == "2" and value("ok.example") == "1"
    assert re.search(r"3 │ Title of s0 │ a\.example, b\.example, c\.example", out), out


@pytest.mark.slow
def test_stats_says_when_the_host_rate_holds_urls_back(
    redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    import sys

    from tests.cli import local_env
    from tests.corpus_server import corpus, serve_pages
    from tests.processes import running

    pages = corpus()
    served = {f"/a/{pid}": pages[pid][0] for pid in sorted(pages)[:6]}
    env = {**local_env(redis_url, key_prefix, sqlite_url, COLUMNS="200"), "NEWSQ_HOST_RATE": "1"}
    worker = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
              "--pool", "threads", "--concurrency", "8"]  # fmt: skip
    with serve_pages(served) as base, running(worker, env, tmp_path / "worker.log"):
        assert run_newsq("enqueue", *(base + path for path in served), env=env).returncode == 0
        deadline, out = time.monotonic() + 20, ""
        while "throttled" not in out and time.monotonic() < deadline:
            out = run_newsq("stats", "--once", env=env, timeout=60).stdout
            time.sleep(0.3)
    assert re.search(r"throttled by .*NEWSQ_HOST_RATE=1.*: \d URLs of 1 host waiting", out), out


def test_the_run_summary_takes_outcomes_from_the_store(
    redis_client: redis.Redis, key_prefix: str, sqlite_url: str
) -> None:
    """The summary of a run's URLs reads the store's records and asks the ledger's
    active sets which are still in flight: it read each URL's state (and a failed
    one's whole entry) from Redis. A URL sent again after an outcome of before counts
    as in flight, not by its old record."""
    from newsq.workers.report import summary_data
    from tests.redis_counts import commands_run

    store = Store.from_url(sqlite_url)
    ledger = Ledger(redis_client, key_prefix)
    urls = [f"http://example.com/s/{i}" for i in range(30)]
    ledger.enqueue(urls)
    for i, url in enumerate(urls[:26]):
        state, reason = ("skipped", "robots_disallowed") if i < 20 else ("failed", "http_404")
        store.record_outcome({"url": url, "state": state, "reason": reason, "attempts": 1})
        ledger.move(url, state, reason=reason)
    ledger.move(urls[25], "queued", force=True, reason=None)  # sent again: in flight
    before = commands_run(redis_client)
    data = summary_data(store, urls, ledger, 1.0)
    spent = commands_run(redis_client) - before
    store.close()
    assert data["states"]["skipped"] == 20 and data["states"]["failed"] == 5
    assert data["states"]["queued"] == 5
    assert data["reasons"] == {"skipped:robots_disallowed": 20, "failed:http_404": 5}
    # the active sets, a command per bucket, then the 5 in flight one by one (before: 36)
    assert spent <= len(ledger.buckets) + 5, spent
