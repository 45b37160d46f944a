"""Feeds that poll themselves, over real HTTP, a real Redis ledger and a real store.

A local server plays a news site whose RSS feed honours ``If-None-Match`` and
``If-Modified-Since`` (304 when unchanged) and counts what it is asked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.feeds.poll import (
    FeedPoll,
    add_feed,
    claim_due,
    due_in,
    next_interval,
    parse_duration,
    poll_feed,
    remove_feed,
)
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import Politeness
from newsq.ledger import Ledger
from newsq.store.database import Store
from newsq.store.database import now as utcnow
from tests.cli import local_env, run_newsq


@dataclass
class Site:
    """The feed's current items and what the server was asked."""

    items: list[str] = field(default_factory=list)
    version: int = 1
    requests: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""

    def publish(self, *slugs: str) -> None:
        with self.lock:
            self.items = [*slugs, *self.items]
            self.version += 1

    def hits(self, path: str) -> list[tuple[dict[str, str], int]]:
        return [(h, status) for p, h, status in self.requests if p == path]


def _rss(site: Site) -> bytes:
    entries = "".join(
        f"<item><title>{s}</title><link>{site.base}/news/{s}</link></item>" for s in site.items
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Local News</title>'
            f"<link>{site.base}/</link>{entries}</channel></rss>").encode()  # fmt: skip


def _sitemaps(site: Site) -> dict[str, bytes]:
    sm = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
    news = 'xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"'
    image = 'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'
    return {
        "/sitemap-index.xml": (
            f'<?xml version="1.0"?><sitemapindex {sm}>'
            f"<sitemap><loc>{site.base}/sitemap-1.xml</loc></sitemap>"
            f"<sitemap><loc>{site.base}/sitemap-news.xml</loc></sitemap></sitemapindex>"
        ).encode(),
        "/sitemap-1.xml": (
            f'<?xml version="1.0"?><urlset {sm} {image}>'
            f"<url><loc>{site.base}/archive/1</loc><lastmod>2024-05-01</lastmod>"
            f"<image:image><image:loc>{site.base}/img/1.jpg</image:loc></image:image></url>"
            f"<url><loc>{site.base}/archive/2</loc></url></urlset>"
        ).encode(),
        "/sitemap-news.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><urlset {sm} {news}>'
            f"<url><loc>{site.base}/news/breaking</loc><news:news><news:publication>"
            f"<news:name>Local News</news:name><news:language>en</news:language>"
            f"</news:publication><news:publication_date>2024-05-02T10:00:00Z"
            f"</news:publication_date><news:title>Breaking</news:title></news:news></url>"
            f"</urlset>"
        ).encode(),
    }


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site(items=["a", "b", "c"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                status, body, headers = self._answer()
                state.requests.append((self.path, dict(self.headers.items()), status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self) -> tuple[int, bytes, dict[str, str]]:
            etag = f'"v{state.version}"'
            modified = formatdate(1_700_000_000 + state.version * 60, usegmt=True)
            xml = {"Content-Type": "application/xml"}
            if self.path in ("/feed.xml", "/lm-only.xml"):
                validators = {"Last-Modified": modified}
                if self.path == "/feed.xml":
                    validators["ETag"] = etag
                    fresh = self.headers.get("If-None-Match") == etag
                else:
                    fresh = self.headers.get("If-Modified-Since") == modified
                if fresh:
                    return 304, b"", validators
                return 200, _rss(state), {"Content-Type": "application/rss+xml", **validators}
            sitemaps = _sitemaps(state)
            if self.path in sitemaps:
                return 200, sitemaps[self.path], xml
            return 404, b"not here", {"Content-Type": "text/plain"}

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Poller:
    """The pieces a poll needs, and the URLs it handed to the fetch stage."""

    store: Store
    fetcher: Fetcher
    ledger: Ledger
    settings: Settings
    sent: list[str] = field(default_factory=list)

    def poll(self, url: str, polite: Politeness | None = None, wait: float = 10.0) -> FeedPoll:
        self.store.update_feed(url, {"next_due": utcnow() - timedelta(seconds=1)})
        claimed = claim_due(self.store, self.settings)
        assert list(claimed) == [url]
        poll = poll_feed(self.store, self.fetcher, self.ledger, url, self.sent.extend,
                         polite, wait, due=claimed[url])  # fmt: skip
        assert poll is not None
        return poll


@pytest.fixture
def poller(settings: Settings, redis_client: redis.Redis) -> Iterator[Poller]:
    store = Store.from_url(settings.database_url)
    fetcher = Fetcher(settings)
    try:
        yield Poller(store, fetcher, Ledger(redis_client, settings.key_prefix), settings)
    finally:
        fetcher.close()
        store.close()


def test_conditional_polls_enqueue_only_what_is_new(site: Site, poller: Poller) -> None:
    feed = add_feed(poller.store, f"{site.base}/feed.xml", poller.settings, every=60,
                    min_every=10, max_every=100)["url"]  # fmt: skip

    first = poller.poll(feed)
    assert first == replace(first, status=200, new=3, known=0, not_modified=False, every_s=30)
    assert poller.sent == [f"{site.base}/news/{s}" for s in ("a", "b", "c")]
    assert poller.ledger.states(poller.sent) == ["queued"] * 3

    # unchanged: the validators go back, the server says 304, nothing is parsed or sent
    second = poller.poll(feed)
    headers, status = site.hits("/feed.xml")[-1]
    assert status == 304 and headers["If-None-Match"] == '"v1"'
    assert "If-Modified-Since" in headers
    assert second == replace(second, status=304, new=0, known=0, not_modified=True, every_s=45)
    assert len(poller.sent) == 3

    # two stories published: only those two are enqueued
    site.publish("d", "e")
    third = poller.poll(feed)
    assert third == replace(third, status=200, new=2, known=3, every_s=22.5)
    assert poller.sent[3:] == [f"{site.base}/news/d", f"{site.base}/news/e"]
    row = poller.store.get_feed(feed)
    assert row is not None
    assert (row["etag"], row["polls"], row["last_new"]) == ('"v2"', 3, 2)
    assert len(site.hits("/feed.xml")) == 3


def test_a_poll_takes_its_hosts_politeness_slot(
    site: Site, poller: Poller, redis_client: redis.Redis
) -> None:
    """A feed poll is a request to its host like an article fetch: it waits for the
    host's token (1 request/s here), and takes one."""
    polite = Politeness(redis_client, replace(poller.settings, host_rate=1.0))
    feed = add_feed(poller.store, f"{site.base}/feed.xml", poller.settings)["url"]
    host = feed.split("/")[2]
    assert polite.acquire(host) == 0  # an article fetch of that host, just now
    polite.release(host)
    started = time.monotonic()
    poll = poller.poll(feed, polite)
    assert time.monotonic() - started >= 0.7
    assert (poll.status, poll.new, poll.error) == (200, 3, None)
    assert polite.acquire(host) > 0  # the poll took the token after it


def test_a_poll_whose_host_stays_busy_is_put_off(
    site: Site, poller: Poller, redis_client: redis.Redis
) -> None:
    polite = Politeness(redis_client, replace(poller.settings, host_concurrency=1))
    feed = add_feed(poller.store, f"{site.base}/feed.xml", poller.settings)["url"]
    host = feed.split("/")[2]
    assert polite.acquire(host) == 0  # the host's one slot, held by a long fetch
    poll = poller.poll(feed, polite, wait=0.3)
    assert poll.status is None and poll.error == f"host {host} busy (politeness)"
    assert site.hits("/feed.xml") == [] and poller.sent == []
    row = poller.store.get_feed(feed)
    assert row is not None and row["polls"] == 0
    due = (row["next_due"].replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds()
    assert 0 < due <= 0.3
    polite.release(host)
    assert poller.poll(feed, polite).new == 3


def test_last_modified_alone_gives_304(site: Site, poller: Poller) -> None:
    feed = add_feed(poller.store, f"{site.base}/lm-only.xml", poller.settings, every=60)["url"]
    poller.poll(feed)
    again = poller.poll(feed)
    headers, status = site.hits("/lm-only.xml")[-1]
    assert status == 304 and "If-None-Match" not in headers
    assert again == replace(again, not_modified=True, new=0)
    assert len(poller.sent) == 3


def test_interval_adapts_within_bounds(site: Site, poller: Poller) -> None:
    assert next_interval(100, 5, 60, 1000) == 60  # halved, but not below the floor
    assert next_interval(900, 0, 60, 1000) == 1000  # stretched, but not past the ceiling
    feed = add_feed(poller.store, f"{site.base}/feed.xml", poller.settings, every=40,
                    min_every=20, max_every=70)["url"]  # fmt: skip
    intervals = [poller.poll(feed).every_s for _ in range(4)]
    assert intervals == [20, 30, 45, 67.5]
    row = poller.store.get_feed(feed)
    assert row is not None
    due = (row["next_due"].replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds()
    assert 60 < due <= 67.5


def test_a_feed_is_polled_every_interval_not_every_interval_plus_a_tick(
    site: Site, poller: Poller
) -> None:
    """Beat ticks every 30 s, a poll takes 2 s: a feed due every 60 s is polled at 0, 60,
    120 s (scheduling from the poll's end gave 0, 90, 180 s)."""
    feed = add_feed(poller.store, f"{site.base}/feed.xml", poller.settings, every=60,
                    min_every=60, max_every=60)["url"]  # fmt: skip
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    poller.store.update_feed(feed, {"next_due": t0})
    polled = []
    for tick in range(0, 181, 30):
        now = t0 + timedelta(seconds=tick)
        for url, due in claim_due(poller.store, poller.settings, now=now).items():
            poll_feed(poller.store, poller.fetcher, poller.ledger, url, poller.sent.extend,
                      due=due, now=now + timedelta(seconds=2))  # fmt: skip
            polled.append(tick)
    assert polled == [0, 60, 120, 180]

    # over an interval late (the worker was down): the next poll is half an interval to
    # one and a half from now, at random, so that feeds late together come apart
    late = t0 + timedelta(seconds=600)
    (due,) = claim_due(poller.store, poller.settings, now=late).values()
    assert due == t0 + timedelta(seconds=240)
    poll_feed(poller.store, poller.fetcher, poller.ledger, feed, poller.sent.extend,
              due=due, now=late + timedelta(seconds=2))  # fmt: skip
    row = poller.store.get_feed(feed)
    assert row is not None and 32 <= due_in(row, now=late) <= 92


def test_a_feed_that_cannot_be_read_backs_off(site: Site, poller: Poller) -> None:
    feed = add_feed(poller.store, f"{site.base}/gone.xml", poller.settings, every=60)["url"]
    poll = poller.poll(feed)
    assert poll == replace(poll, status=404, new=0, every_s=90)
    assert poll.error and "http_error" in poll.error
    assert poller.sent == []


def test_sitemap_index_and_google_news_sitemap(site: Site, poller: Poller) -> None:
    news = add_feed(poller.store, f"{site.base}/sitemap-news.xml", poller.settings)["url"]
    first, second = poller.poll(news), poller.poll(news)
    assert first == replace(first, status=200, new=1, known=0)
    assert second == replace(second, status=200, new=0, known=1)  # no validators: all known
    assert poller.sent == [f"{site.base}/news/breaking"]

    index = add_feed(poller.store, f"{site.base}/sitemap-index.xml", poller.settings,
                     kind="feed")["url"]  # fmt: skip
    poll = poller.poll(index)
    assert poll == replace(poll, new=2, known=1)
    assert poller.sent[1:] == [f"{site.base}/archive/1", f"{site.base}/archive/2"]
    row = poller.store.get_feed(index)
    assert row is not None and row["kind"] == "sitemap"  # learnt from the body


def test_only_one_claimer_takes_a_due_feed(settings: Settings, database_url: str) -> None:
    settings = replace(settings, database_url=database_url)
    store = Store.from_url(database_url)
    try:
        url = add_feed(store, "https://news.example/rss", settings, every=60)["url"]
        barrier = threading.Barrier(8)
        won: list[list[str]] = []

        def claim() -> None:
            barrier.wait()
            won.append(list(claim_due(store, settings)))

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == [[]] * 7 + [[url]]
        assert claim_due(store, settings) == {}
        # a claimer that died: the lease runs out and the feed is due again
        later = utcnow() + timedelta(seconds=settings.fetch_timeout * 5 + 61)
        assert list(claim_due(store, settings, now=later)) == [url]
    finally:
        store.close()


def test_adding_a_feed_again_changes_its_intervals_and_keeps_its_history(
    site: Site, settings: Settings, database_url: str, redis_client: redis.Redis
) -> None:
    settings = replace(settings, database_url=database_url)
    store = Store.from_url(database_url)
    fetcher = Fetcher(settings)
    try:
        poller = Poller(store, fetcher, Ledger(redis_client, settings.key_prefix), settings)
        url = add_feed(store, f"{site.base}/feed.xml", settings, every=600, kind="sitemap")["url"]
        poller.poll(url)
        polled = store.get_feed(url)
        assert polled is not None and polled["polls"] == 1 and polled["etag"]
        assert polled["kind"] == "feed"  # learnt from the body

        again = add_feed(store, url, settings, every=120, min_every=60, max_every=3600)
        assert (again["every_s"], again["min_every_s"], again["max_every_s"]) == (120, 60, 3600)
        history = ("added_at", "polls", "etag", "last_modified", "last_polled", "last_status",
                   "last_new", "kind")  # fmt: skip
        assert {k: again[k] for k in history} == {k: polled[k] for k in history}
        assert due_in(again) <= 0
        # bounds alone: the interval is brought within them, the rest stays
        narrowed = add_feed(store, url, settings, min_every=300)
        assert (narrowed["every_s"], narrowed["min_every_s"], narrowed["max_every_s"]) == (
            300, 300, 3600
        )  # fmt: skip
        assert add_feed(store, url, settings)["every_s"] == 300
        with pytest.raises(ConfigError, match="min <= every <= max"):
            add_feed(store, url, settings, every=30, min_every=60)
        assert [r["url"] for r in store.list_feeds()] == [url]
    finally:
        fetcher.close()
        store.close()


def test_durations() -> None:
    assert [parse_duration(d) for d in ("30s", "10m", "2h", "1d", "45", "1.5h")] == [
        30, 600, 7200, 86400, 45, 5400
    ]  # fmt: skip
    for bad in ("", "10x", "-5m", "0s", "m"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_remove_normalises_like_add(settings: Settings) -> None:
    store = Store.from_url(settings.database_url)
    try:
        add_feed(store, "HTTPS://News.Example/rss?utm_source=x", settings)
        assert [r["url"] for r in store.list_feeds()] == ["https://news.example/rss"]
        assert remove_feed(store, "https://NEWS.example/rss")
        assert not remove_feed(store, "https://news.example/rss")
    finally:
        store.close()


# -- through the real command line ---------------------------------------------------------


def newsq(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_newsq(*args, env=env, timeout=timeout)


@pytest.fixture
def env(redis_url: str, key_prefix: str, sqlite_url: str) -> dict[str, str]:
    return local_env(redis_url, key_prefix, sqlite_url)


def test_cli_feeds_add_list_remove(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "NEWSQ_BROKER_URL"}  # the store is enough
    added = newsq("feeds", "add", "https://news.example/rss.xml", "--every", "10m", env=env)
    assert added.returncode == 0, added.stderr
    assert "every 10m" in added.stdout
    sitemap = newsq("feeds", "add", "https://news.example/sitemap-news.xml", "--every", "2h",
                    "--min", "5m", env=env)  # fmt: skip
    assert sitemap.returncode == 0, sitemap.stderr

    listed = newsq("feeds", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["url"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["https://news.example/rss.xml"]["every_s"] == 600
    assert rows["https://news.example/rss.xml"]["kind"] == "feed"
    assert rows["https://news.example/sitemap-news.xml"]["kind"] == "sitemap"
    assert rows["https://news.example/sitemap-news.xml"]["min_every_s"] == 300
    table = newsq("feeds", "list", env=env)
    assert "https://news.example/rss.xml" in table.stdout and "10m" in table.stdout

    assert newsq("feeds", "remove", "https://news.example/rss.xml", env=env).returncode == 0
    again = newsq("feeds", "remove", "https://news.example/rss.xml", env=env)
    assert again.returncode == 1 and "no such feed" in again.stderr
    listed = newsq("feeds", "list", "--json", env=env)
    assert [json.loads(line)["url"] for line in listed.stdout.splitlines()] == [
        "https://news.example/sitemap-news.xml"
    ]

    bad = newsq("feeds", "add", "https://news.example/x", "--every", "10 parsecs", env=env)
    assert bad.returncode == 2 and "duration" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_feeds_add_twice_updates_the_feed(
    redis_url: str, key_prefix: str, database_url: str
) -> None:
    env = local_env(redis_url, key_prefix, database_url)
    first = newsq("feeds", "add", "https://news.example/rss.xml", "--every", "10m", env=env)
    assert first.returncode == 0, first.stderr
    again = newsq("feeds", "add", "https://news.example/rss.xml", "--every", "5m",
                  "--max", "1h", env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("updated https://news.example/rss.xml (feed), every 5m")
    (row,) = map(json.loads, newsq("feeds", "list", "--json", env=env).stdout.splitlines())
    assert (row["every_s"], row["max_every_s"], row["polls"]) == (300, 3600, 0)


@pytest.mark.slow
def test_worker_with_embedded_beat_polls_a_due_feed(site: Site, env: dict[str, str],
                                                    settings: Settings, tmp_path: Path,
                                                    redis_client: redis.Redis) -> None:  # fmt: skip
    store = Store.from_url(settings.database_url)
    added = add_feed(store, f"{site.base}/feed.xml", settings, every=3600)
    feed = added["url"]
    store.close()
    ledger = Ledger(redis_client, settings.key_prefix)
    expected = [f"{site.base}/news/{s}" for s in ("a", "b", "c")]
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "newsq", "worker", "--beat", "--queues", "fetch",
         "--pool", "threads", "--concurrency", "4"],
        env={**env, "NEWSQ_FEED_TICK": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and None in ledger.states(expected):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.3)
        assert None not in ledger.states(expected), (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(2)  # more ticks: the feed is not due again, so it is not polled again
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    assert len(site.hits("/feed.xml")) == 1
    store = Store.from_url(settings.database_url)
    row = store.get_feed(feed)
    store.close()
    assert row is not None and row["polls"] == 1 and row["last_new"] == 3
    # the tick handed the due time to the poll: the next is an interval after it
    now = utcnow()
    assert due_in(row, now=now) - due_in(added, now=now) == row["every_s"]
