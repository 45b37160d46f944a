"""The URL ledger on a real Redis: atomic enqueue and state moves."""

from __future__ import annotations

import multiprocessing as mp

import redis

from newsq.ledger import Ledger


def _enqueue(redis_url: str, prefix: str, urls: list[str], out: mp.Queue) -> None:  # type: ignore[type-arg]
    ledger = Ledger(redis.Redis.from_url(redis_url), prefix)
    out.put(sum(ledger.enqueue(urls)))


def test_concurrent_enqueuers_enqueue_each_url_once(redis_url: str, key_prefix: str) -> None:
    urls = [f"http://example.com/{i}" for i in range(300)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_enqueue, args=(redis_url, key_prefix, urls, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sum(out.get(timeout=5) for _ in procs) == len(urls)
    ledger = Ledger(redis.Redis.from_url(redis_url), key_prefix)
    assert ledger.counts()["queued"] == len(urls)


def test_terminal_state_is_kept_and_counted(redis_client: redis.Redis, key_prefix: str) -> None:
    ledger = Ledger(redis_client, key_prefix)
    url = "http://example.com/a"
    assert ledger.enqueue([url, url]) == [True, False]
    assert ledger.begin(url, "fetching") == ("queued", 1)
    assert ledger.move(url, "failed", reason="timeout") == "fetching"
    # a second delivery of a finished URL does nothing
    assert ledger.begin(url, "fetching") == ("failed", 0)
    assert ledger.move(url, "stored") == "failed"
    counts = ledger.counts()
    assert counts["failed"] == 1 and counts["fetching"] == 0 and counts["stored"] == 0
    assert ledger.reasons() == {"failed:timeout": 1}
    # a user's retry may leave a terminal state
    assert ledger.move(url, "queued", force=True, reason=None) == "failed"
    assert ledger.get(url)["state"] == "queued"  # type: ignore[index]
    assert "reason" not in ledger.get(url)  # type: ignore[operator]


def test_deliveries_count_unfinished_takes(redis_client: redis.Redis, key_prefix: str) -> None:
    ledger = Ledger(redis_client, key_prefix)
    url = "http://example.com/b"
    ledger.enqueue([url])
    assert ledger.begin(url, "fetching")[1] == 1
    assert ledger.begin(url, "fetching")[1] == 2  # the first take never finished
    ledger.move(url, "fetched")
    assert ledger.begin(url, "fetched")[1] == 1
    assert [u for u, _, _ in ledger.stuck(0)] == [url]
