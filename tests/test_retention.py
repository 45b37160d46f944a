"""A bounded ledger: terminal entries expire after the retention, the store remembers.

Real Redis and real stores; the retention is shortened to about a second, so "after
the ledger forgot" is a short sleep. URLs reach their states by the pipeline's own
steps on a small local site, or by the same store-then-ledger writes the steps make.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from newsq import errors
from newsq.api import status
from newsq.config.settings import Settings
from newsq.feeds.intake import enqueue
from newsq.ledger import Ledger
from newsq.pipeline import fetch_step, poisoned, process_step, requeue
from newsq.records import FAILED, FETCHING, STORED, TERMINAL
from newsq.resources import Runtime
from newsq.store.database import Store
from tests.faults.site import Site, serve

importlib.import_module("newsq.clean.extract")  # its import warns; not inside a test

RETENTION_S = 1.0
RETENTION_DAYS = RETENTION_S / 86400


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(replace(settings, ledger_retention_days=RETENTION_DAYS))
    yield runtime
    runtime.close()


@pytest.fixture
def site() -> Iterator[Site]:
    built = Site(stories=1, copies=1, missing=1).build()
    built.pages["/empty/0"] = b"<html><head><title>x</title></head><body><p>Hi.</p></body></html>"
    with serve(built) as served:
        yield served


def _run(rt: Runtime, urls: list[str]) -> None:
    """Enqueue ``urls`` as ``newsq enqueue`` does and take each through the pipeline."""
    enqueue(rt.ledger, rt.store, urls, send=lambda _url: None)
    for url in urls:
        step = fetch_step(rt, url, hand_off=False)
        if step.page is not None:
            process_step(rt, url, step.page)


def _forgotten(ledger: Ledger, urls: list[str], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(ledger.redis.exists(ledger.key(u)) for u in urls):
            return True
        time.sleep(0.1)
    return False


def _finished(store: Store, ledger: Ledger, urls: list[str], state: str = STORED) -> None:
    """The writes a finishing step makes: the store's record, then the ledger's move."""
    for url in urls:
        store.record_outcome({"url": url, "state": state})
        ledger.move(url, state)


def test_every_terminal_path_is_in_the_store_and_its_entry_expires(
    settings: Settings, site: Site
) -> None:
    # longer than the others: the first entries must still be there after the last step
    rt = Runtime(replace(settings, ledger_retention_days=3 / 86400))
    try:
        _every_terminal_path(rt, site)
    finally:
        rt.close()


def _every_terminal_path(rt: Runtime, site: Site) -> None:
    paths = ("/story/0", "/copy/0", "/gone/0", "/empty/0", "/story/x")
    story, copy, gone, empty, dead = (site.base + p for p in paths)
    _run(rt, [story, copy, gone, empty])
    enqueue(rt.ledger, rt.store, ["not a url"], send=lambda _url: None)
    rt.ledger.enqueue([dead])
    for _ in range(rt.settings.max_deliveries + 1):  # deliveries whose worker died
        _, deliveries = rt.ledger.begin(dead, FETCHING)
    poisoned(rt, dead, deliveries)
    in_flight = site.base + "/story/later"
    rt.ledger.enqueue([in_flight])

    ends = {story: "stored", copy: "duplicate", gone: "failed", empty: "skipped",
            dead: "failed", "not a url": "failed"}  # fmt: skip
    for url, state in ends.items():
        assert rt.ledger.get(url)["state"] == state  # type: ignore[index]
        assert 0 < rt.redis.ttl(rt.ledger.key(url)) <= rt.ledger.retention
        record = rt.store.url_record(url)
        assert record is not None and record["state"] == state, url
    assert rt.store.url_record(dead)["reason"] == errors.POISON  # type: ignore[index]
    assert rt.redis.ttl(rt.ledger.key(in_flight)) == -1  # in flight: kept

    assert _forgotten(rt.ledger, list(ends))
    assert rt.ledger.get(in_flight) is not None
    counts = rt.ledger.counts()  # terminal counts are totals: expiry does not undo them
    assert counts["stored"] == 1 and counts["failed"] == 3 and counts["queued"] == 1


def test_a_retry_keeps_the_entry_until_it_ends_again(rt: Runtime) -> None:
    url = "https://news.example/retried"
    rt.ledger.enqueue([url])
    _finished(rt.store, rt.ledger, [url])
    assert rt.redis.ttl(rt.ledger.key(url)) > 0
    requeue(rt.ledger, [url], lambda _url: None)
    assert rt.redis.ttl(rt.ledger.key(url)) == -1
    assert rt.ledger.get(url)["state"] == "queued"  # type: ignore[index]


def test_a_retry_after_expiry_makes_a_whole_entry(rt: Runtime) -> None:
    url = "https://news.example/expired-retry"
    rt.ledger.enqueue([url])
    _finished(rt.store, rt.ledger, [url])
    assert _forgotten(rt.ledger, [url])
    requeue(rt.ledger, [url], lambda _url: None)
    entry = rt.ledger.get(url)
    assert entry is not None and entry["url"] == url and entry["state"] == "queued"
    assert [u for u, _, _ in rt.ledger.stuck(0)] == [url]  # found again if its message is lost


def test_notes_and_releases_do_not_bring_back_an_expired_entry(rt: Runtime) -> None:
    url = "https://news.example/gone-from-ledger"
    rt.ledger.note(url, last_error="x")
    rt.ledger.release(url)
    assert not rt.redis.exists(rt.ledger.key(url))
    rt.ledger.enqueue([url])
    rt.ledger.note(url, last_error="boom")
    assert rt.ledger.get(url)["last_error"] == "boom"  # type: ignore[index]


def _enqueuer(redis_url: str, prefix: str, database_url: str, urls: list[str],
              start: threading.Barrier, out: list[list[str]]) -> None:  # fmt: skip
    ledger = Ledger(redis.Redis.from_url(redis_url), prefix, retention_days=RETENTION_DAYS)
    store = Store.from_url(database_url)
    try:
        start.wait(10)
        sent: list[str] = []
        enqueue(ledger, store, urls, send=sent.extend)
        out.append(sent)
    finally:
        store.close()
        ledger.redis.close()


def test_known_after_expiry_with_concurrent_enqueuers(
    redis_url: str, key_prefix: str, database_url: str
) -> None:
    old = [f"https://news.example/old/{i}" for i in range(300)]
    new = [f"https://news.example/new/{i}" for i in range(300)]
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client, key_prefix, retention_days=RETENTION_DAYS)
    store = Store.from_url(database_url)
    try:
        enqueue(ledger, store, old, send=lambda _url: None)
        _finished(store, ledger, old[:150])
        _finished(store, ledger, old[150:], FAILED)
        assert _forgotten(ledger, old)
        # given again, as another spelling normalisation maps to the same URL
        given = [u.replace("https://news.example", "https://NEWS.example:443") for u in old]
        start = threading.Barrier(4)
        out: list[list[str]] = []
        threads = [threading.Thread(target=_enqueuer, args=(redis_url, key_prefix, database_url,
                                                            given + new, start, out))
                   for _ in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent = [url for one in out for url in one]
        assert len(out) == 4
        assert sorted(sent) == sorted(new)  # each new URL by exactly one, no old one again
        assert not any(client.exists(ledger.key(u)) for u in old)  # the claims were dropped
        assert ledger.counts()["queued"] == len(new)
        assert all(s not in TERMINAL for s in ledger.states(new))
    finally:
        store.close()
        client.close()


def test_status_answers_from_the_store_after_expiry(rt: Runtime) -> None:
    url = "https://news.example/answered"
    rt.ledger.enqueue([url])
    rt.store.record_outcome({"url": url, "state": FAILED, "reason": errors.HTTP_ERROR,
                             "detail": "HTTP 404", "attempts": 1})  # fmt: skip
    rt.ledger.move(url, FAILED, reason=errors.HTTP_ERROR)
    live = status(url, settings=rt.settings)
    assert live is not None and live["live"] is True and live["t_done"].endswith("+00:00")
    assert _forgotten(rt.ledger, [url])
    out = status(url, settings=rt.settings)
    assert out is not None and out["live"] is False
    assert (out["state"], out["reason"], out["detail"]) == ("failed", "http_error", "HTTP 404")
    assert out["updated_at"].endswith("+00:00")


def test_status_makes_no_store(rt: Runtime, tmp_path: Path) -> None:
    url = "https://news.example/only-in-the-ledger"
    rt.ledger.enqueue([url])
    missing = tmp_path / "none.db"
    settings = replace(rt.settings, database_url=f"sqlite:///{missing}")
    out = status(url, settings=settings)
    assert out is not None and out["state"] == "queued"
    assert out["t_enq"].endswith("+00:00")
    assert not missing.exists()
