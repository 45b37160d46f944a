"""Thousands of feeds: bulk registration, due times spread over the interval, the origin
each URL keeps, and the age limit on feed entries and sitemap URLs.

Real stores (SQLite and PostgreSQL) and a real Redis; the feeds come from a local HTTP
server that counts what it is asked.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from newsq.config.settings import Settings
from newsq.feeds.intake import Origin, enqueue, gather
from newsq.feeds.poll import add_feeds, claim_due, next_due, poll_feed
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import Politeness
from newsq.ledger import Ledger
from newsq.store.database import Store, feeds
from newsq.store.database import now as utcnow
from tests.cli import local_env, run_newsq

NOW = datetime.now(UTC).replace(microsecond=0)
SM = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
NEWS = 'xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"'


@dataclass
class Server:
    """Bodies by path, and the paths asked for."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    base: str = ""


def _days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _rss(base: str) -> bytes:
    items = [("Fresh story", "fresh", _days_ago(1)), ("Old story", "old", _days_ago(40)),
             ("Undated story", "undated", None)]  # fmt: skip
    entries = "".join(
        f"<item><title>{title}</title><link>{base}/news/{slug}</link>"
        + (f"<pubDate>{format_datetime(when)}</pubDate>" if when else "")
        + "</item>"
        for title, slug, when in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel>{entries}</channel></rss>'.encode()


def _sitemaps(base: str) -> dict[str, bytes]:
    day = "%Y-%m-%d"
    return {
        "/sitemap-index.xml": (
            f'<?xml version="1.0"?><sitemapindex {SM}>'
            f"<sitemap><loc>{base}/sitemap-2019.xml</loc><lastmod>2019-12-31</lastmod></sitemap>"
            f"<sitemap><loc>{base}/sitemap-news.xml</loc>"
            f"<lastmod>{_days_ago(0).isoformat()}</lastmod></sitemap></sitemapindex>"
        ).encode(),
        "/sitemap-2019.xml": (
            f'<?xml version="1.0"?><urlset {SM}><url><loc>{base}/2019/a</loc></url></urlset>'
        ).encode(),
        "/sitemap-news.xml": (
            f'<?xml version="1.0"?><urlset {SM} {NEWS}>'
            f"<url><loc>{base}/s/new</loc><news:news><news:publication_date>"
            f"{_days_ago(2).isoformat()}</news:publication_date><news:title>New one"
            f"</news:title></news:news></url>"
            # republished: an old story whose lastmod is recent is still an old story
            f"<url><loc>{base}/s/old-news</loc><lastmod>{_days_ago(1).strftime(day)}</lastmod>"
            f"<news:news><news:publication_date>{_days_ago(90).strftime(day)}"
            f"</news:publication_date></news:news></url>"
            f"<url><loc>{base}/s/modified</loc><lastmod>{_days_ago(3).strftime(day)}</lastmod>"
            f"</url><url><loc>{base}/s/stale</loc><lastmod>2020-01</lastmod></url>"
            f"<url><loc>{base}/s/plain</loc></url></urlset>"
        ).encode(),
    }


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            body = state.bodies.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.bodies = {"/feed.xml": _rss(state.base), "/other.xml": _rss(state.base),
                    **_sitemaps(state.base)}  # fmt: skip
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def aged(settings: Settings) -> Settings:
    """The default age limit: 30 days."""
    return replace(settings, max_age_days=30.0)


# -- bulk registration ---------------------------------------------------------------


def test_feeds_add_file_registers_ten_thousand_and_refuses_bad_lines(
    redis_url: str, key_prefix: str, database_url: str, tmp_path: Path
) -> None:
    lines = ["# feeds of the desk", ""]
    lines += [f"https://site{i % 2500}.example/feed-{i}.xml" for i in range(10_000)]
    lines[500] = "not a feed"
    lines[7000] = "ftp://files.example/feed.xml"
    lines.append("https://site1.example/feed-1.xml?utm_source=x")  # the same feed again
    path = tmp_path / "feeds.txt"
    path.write_text("\n".join(lines) + "\n")
    env = local_env(redis_url, key_prefix, database_url)
    started = time.monotonic()
    out = run_newsq("feeds", "add", "--file", str(path), "--every", "10m", "--max", "1h", env=env)
    took = time.monotonic() - started
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    errors = out.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"newsq: {path}:501: not a feed URL: not a feed")
    assert errors[1].startswith(f"newsq: {path}:7001: not a feed URL: ftp://")
    assert out.stdout.strip() == (
        "added 9998, updated 0 feeds, 2 lines refused; first polls within 10m"
    )
    assert took < 30  # one transaction, not ten thousand (about a second here)

    store = Store.from_url(database_url)
    try:
        rows = store.list_feeds()
        assert len(rows) == 9998
        assert {(r["every_s"], r["max_every_s"]) for r in rows} == {(600, 3600)}
        # again: every feed updated, its history kept
        again = run_newsq("feeds", "add", "--file", str(path), "--every", "5m", env=env)
        assert again.returncode == 1 and again.stdout.startswith("added 0, updated 9998")
        assert {r["every_s"] for r in store.list_feeds()} == {300}
    finally:
        store.close()


def test_feeds_add_needs_a_url_or_a_file(redis_url: str, key_prefix: str,
                                         sqlite_url: str, tmp_path: Path) -> None:  # fmt: skip
    env = local_env(redis_url, key_prefix, sqlite_url)
    for args in ((), ("https://a.example/rss", "--file", str(tmp_path / "f"))):
        out = run_newsq("feeds", "add", *args, env=env)
        assert out.returncode == 2 and "one of the two" in out.stderr
    gone = run_newsq("feeds", "add", "--file", str(tmp_path / "missing.txt"), env=env)
    assert gone.returncode == 2 and "cannot read feed file" in gone.stderr
    assert len(gone.stderr.splitlines()) == 1


# -- due times spread ----------------------------------------------------------------


def test_feeds_added_at_once_come_due_spread_over_their_interval(
    settings: Settings, database_url: str
) -> None:
    """10,000 feeds added at once, every 10 minutes: beat's 30 s ticks find about 500
    each, not 10,000 in the first."""
    store = Store.from_url(database_url)
    try:
        lines = [f"https://site{i}.example/rss" for i in range(10_000)]
        start = utcnow()
        added = add_feeds(store, lines, settings, every=600, rng=random.Random(7))
        assert (added.added, added.errors) == (10_000, [])
        offsets = [(_utc(r["next_due"]) - start).total_seconds() for r in store.list_feeds()]
        assert min(offsets) >= 0 and max(offsets) <= 601
        per_tick = Counter(int(o // 30) for o in offsets)
        assert len(per_tick) >= 20 and max(per_tick.values()) < 650  # ~500 a tick
        # the first tick claims only its share
        claimed = claim_due(store, settings, now=start + timedelta(seconds=30))
        assert 350 < len(claimed) < 650
    finally:
        store.close()


def test_concurrent_ticks_claim_each_due_feed_once(settings: Settings, database_url: str) -> None:
    """Beat's tick claims its due feeds in batches; ticks racing (two beats) split them,
    each feed taken exactly once."""
    store = Store.from_url(database_url)
    try:
        add_feeds(store, [f"https://site{i}.example/rss" for i in range(1200)], settings)
        with store.engine.begin() as conn:  # all due at once: the worst case
            conn.execute(feeds.update().values(next_due=utcnow() - timedelta(seconds=1)))
        barrier = threading.Barrier(4)
        won: list[list[str]] = []

        def tick() -> None:
            barrier.wait()
            won.append(list(claim_due(store, settings)))

        threads = [threading.Thread(target=tick) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        taken = [url for claimed in won for url in claimed]
        assert len(taken) == len(set(taken)) == 1200
        assert claim_due(store, settings) == {}
    finally:
        store.close()


def test_feeds_polled_over_an_interval_late_come_due_apart() -> None:
    """After an outage every feed is late at once; their next polls spread over an
    interval instead of all coming due together again."""
    due, now = NOW - timedelta(hours=1), NOW
    rng = random.Random(3)
    times = [next_due(due, 600, now, rng.random()) for _ in range(1000)]
    offsets = [(t - now).total_seconds() for t in times]
    assert min(offsets) >= 300 and max(offsets) < 900
    assert len(Counter(int(o // 30) for o in offsets)) == 20
    on_time = next_due(now - timedelta(seconds=20), 600, now)
    assert on_time == now + timedelta(seconds=580)  # on time: the phase is kept


def test_feeds_of_one_host_share_its_rate(
    server: Server, settings: Settings, redis_client: redis.Redis
) -> None:
    """Two feeds of one host polled back to back at 2 requests/s: the second waits for
    the host's next token."""
    polite = Politeness(redis_client, replace(settings, host_rate=2.0))
    store = Store.from_url(settings.database_url)
    try:
        feeds = [f"{server.base}/feed.xml", f"{server.base}/other.xml"]
        add_feeds(store, feeds, settings)
        for url in feeds:
            store.update_feed(url, {"next_due": utcnow() - timedelta(seconds=1)})
        claimed = claim_due(store, settings)
        ledger = Ledger(redis_client, settings.key_prefix)
        with Fetcher(settings) as fetcher:
            started = time.monotonic()
            for url, due in claimed.items():
                poll_feed(store, fetcher, ledger, url, lambda _: None, polite, due=due)
            took = time.monotonic() - started
        assert server.hits.count("/feed.xml") == server.hits.count("/other.xml") == 1
        assert took >= 0.4
    finally:
        store.close()


# -- origin --------------------------------------------------------------------------


def test_a_polled_url_keeps_its_feed_title_and_date(
    server: Server, aged: Settings, database_url: str, redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = replace(aged, database_url=database_url)
    store = Store.from_url(database_url)
    ledger = Ledger(
        redis_client, settings.key_prefix, retention_days=settings.ledger_retention_days
    )
    feed = f"{server.base}/feed.xml"
    fresh = f"{server.base}/news/fresh"
    try:
        add_feeds(store, [feed], settings)
        store.update_feed(feed, {"next_due": utcnow() - timedelta(seconds=1)})
        sent: list[str] = []
        with Fetcher(settings) as fetcher, caplog.at_level("INFO", "newsq.feeds.poll"):
            (due,) = claim_due(store, settings).values()
            poll = poll_feed(store, fetcher, ledger, feed, sent.extend, due=due)
        assert poll is not None and (poll.new, poll.too_old) == (2, 1)
        assert sent == [fresh, f"{server.base}/news/undated"]
        said = "2 new, 0 known, skipped 1 older than 30 days (NEWSQ_MAX_AGE_DAYS)"
        assert f"feed {feed} polled: HTTP 200, {said}" in caplog.text

        published = _days_ago(1).isoformat()
        live = ledger.get(fresh)
        assert live is not None
        assert (live["feed"], live["feed_title"], live["feed_published"]) == (
            feed, "Fresh story", published
        )  # fmt: skip
        record = store.url_record(fresh)
        assert record is not None and record["state"] == "queued"
        assert (record["feed"], record["feed_title"]) == (feed, "Fresh story")
        assert _utc(record["feed_published"]).isoformat() == published
        undated = store.url_record(f"{server.base}/news/undated")
        assert undated is not None and undated["feed_published"] is None

        # the terminal outcome fills the row in; the origin stays
        store.record_outcome({"url": fresh, "state": "failed", "reason": "http_error"})
        record = store.url_record(fresh)
        assert record is not None and (record["state"], record["feed"]) == ("failed", feed)
        assert store.state_counts() == {"failed": 1}  # queued rows are not outcomes
    finally:
        store.close()


def test_status_shows_the_origin_live_and_after_the_ledger_forgot(
    server: Server, redis_url: str, key_prefix: str, database_url: str,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    env = local_env(redis_url, key_prefix, database_url, NEWSQ_MAX_AGE_DAYS="30")
    enqueued = run_newsq("enqueue", "--feed", f"{server.base}/feed.xml", env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    assert enqueued.stdout.startswith("enqueued 2, already known 0")
    assert "newsq: feeds: skipped 1 older than 30 days (NEWSQ_MAX_AGE_DAYS)" in enqueued.stderr

    fresh = f"{server.base}/news/fresh"
    expected = {"feed": f"{server.base}/feed.xml", "feed_title": "Fresh story",
                "feed_published": _days_ago(1).isoformat()}  # fmt: skip
    shown = json.loads(run_newsq("status", fresh, env=env).stdout)
    assert {k: shown.get(k) for k in expected} == expected
    assert shown["state"] == "queued" and shown["live"] is True

    # the URL finished and its ledger entry expired: the store answers, origin and all
    store = Store.from_url(database_url)
    try:
        store.record_outcome({"url": fresh, "state": "failed", "reason": "http_error"})
    finally:
        store.close()
    ledger = Ledger(redis_client, key_prefix, retention_days=0.00001)
    ledger.move(fresh, "failed", reason="http_error")
    deadline = time.monotonic() + 5
    while ledger.get(fresh) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    shown = json.loads(run_newsq("status", fresh, env=env).stdout)
    assert {k: shown.get(k) for k in expected} == expected
    assert (shown["state"], shown["live"]) == ("failed", False)


def test_a_queued_origin_row_does_not_make_a_url_known(
    settings: Settings, database_url: str, redis_client: redis.Redis
) -> None:
    """Redis lost the ledger of a URL in flight: the store's ``queued`` row (its origin)
    is no outcome, so enqueueing it again sends it again."""
    store = Store.from_url(database_url)
    try:
        ledger = Ledger(redis_client, settings.key_prefix)
        url = "https://news.example/a"
        origin = {url: Origin("https://news.example/rss", "A", NOW)}
        assert enqueue(ledger, store, [url], send=lambda _: None, origins=origin).new == [url]
        bucket = ledger.bucket(url)
        redis_client.delete(ledger.key(url), bucket.counts, bucket.active)
        assert enqueue(ledger, store, [url], send=lambda _: None).new == [url]
        store.record_outcome({"url": url, "state": "stored"})
        redis_client.delete(ledger.key(url))
        assert enqueue(ledger, store, [url], send=lambda _: None).known == [url]
    finally:
        store.close()


# -- the age limit -------------------------------------------------------------------


def test_sitemaps_leave_out_urls_and_child_sitemaps_older_than_the_limit(
    server: Server, aged: Settings
) -> None:
    with Fetcher(aged) as fetcher:
        found = gather(fetcher, [f"{server.base}/sitemap-index.xml"], [], [])
    base = server.base
    assert found.problems == []
    assert found.urls == [f"{base}/s/new", f"{base}/s/modified", f"{base}/s/plain"]
    assert found.too_old == 2  # old-news (published 90 days ago) and stale (2020)
    assert "/sitemap-2019.xml" not in server.hits  # its lastmod says nothing is new there
    new = found.origins[f"{base}/s/new"]
    assert (new.feed, new.title) == (f"{base}/sitemap-index.xml", "New one")
    assert new.published == _days_ago(2)

    # no limit: everything, the old child sitemap read too
    with Fetcher(replace(aged, max_age_days=0.0)) as fetcher:
        every = gather(fetcher, [f"{base}/sitemap-index.xml"], [], [])
    assert len(every.urls) == 6 and every.too_old == 0
    assert "/sitemap-2019.xml" in server.hits


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)
