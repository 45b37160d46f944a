"""Hostile feeds and sitemaps from a local server: what remote bodies must never do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hostile_server import HostileServer

from newsq.config.settings import Settings
from newsq.errors import BAD_CONTENT_TYPE, DISCOVERY_LIMIT
from newsq.feeds import parse as feeds
from newsq.feeds.intake import expand_feed, gather
from newsq.feeds.poll import add_feed, poll_feed
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import Politeness
from newsq.ledger import Ledger
from newsq.store.database import Store

LOCAL_FEED = b"<rss><channel><item><link>http://local.test/a</link></item></channel></rss>"


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as srv:
        yield srv


@pytest.fixture
def fetcher(settings: Settings) -> Iterator[Fetcher]:
    with Fetcher(settings) as f:
        yield f


@pytest.mark.parametrize("spelling", ["{}", "file://{}", " {}\n"])
def test_a_feed_body_naming_a_local_file_is_not_opened(
    server: HostileServer, fetcher: Fetcher, tmp_path: Path, spelling: str
) -> None:
    local = tmp_path / "feed.xml"
    local.write_bytes(LOCAL_FEED)
    body = spelling.format(local)
    urls, error = expand_feed(fetcher, server.url(f"/body-is?text={quote(body)}"))
    assert urls == []
    assert error is not None and error.startswith("not a feed or sitemap")


def test_a_feed_body_naming_dev_zero_is_not_read(server: HostileServer, fetcher: Fetcher) -> None:
    urls, error = expand_feed(fetcher, server.url("/feed-names-zero"))
    assert urls == [] and error is not None


def test_parse_never_opens_a_path(tmp_path: Path) -> None:
    local = tmp_path / "feed.xml"
    local.write_bytes(LOCAL_FEED)
    items = feeds.parse(str(local).encode(), "http://feeds.test/")
    assert items.urls == () and items.error


# -- sitemaps: bounds and politeness ---------------------------------------------------


def _tree(server: HostileServer, fan: int, levels: int) -> str:
    return server.url(f"/sitemap-tree/{fan}/{levels}/t.xml")


def _asked(server: HostileServer, since: float, prefix: str = "/sitemap-tree/") -> list[float]:
    return [t for t, path in server.requests if t >= since and path.startswith(prefix)]


def _gather(settings: Settings, feed: str, **options: Any) -> tuple[list[str], list[str]]:
    with Fetcher(settings) as fetcher:
        found = gather(fetcher, [feed], [], [], **options)
    return found.urls, [error for _, error in found.problems]


def test_a_sitemap_fan_out_stops_at_the_request_bound(
    server: HostileServer, settings: Settings
) -> None:
    since = time.time()
    urls, problems = _gather(replace(settings, discovery_max_requests=5), _tree(server, 10, 1))
    assert len(_asked(server, since)) == 5  # the index and 4 of its 10 children
    assert len(urls) == 40
    assert problems == [f"{DISCOVERY_LIMIT}: stopped at 5 requests "
                        "(NEWSQ_DISCOVERY_MAX_REQUESTS); 40 URLs kept"]  # fmt: skip


def test_nested_sitemap_indexes_stop_at_the_depth_bound(
    server: HostileServer, settings: Settings
) -> None:
    since = time.time()
    urls, problems = _gather(replace(settings, discovery_max_depth=2), _tree(server, 2, 4))
    assert len(_asked(server, since)) == 1 + 2 + 4  # the root and two levels below it
    assert urls == []  # the leaves are deeper still
    assert len(problems) == 1 and "NEWSQ_DISCOVERY_MAX_DEPTH" in problems[0]


def test_the_urls_of_one_input_stop_at_the_url_bound(
    server: HostileServer, settings: Settings
) -> None:
    urls, problems = _gather(replace(settings, discovery_max_urls=15), _tree(server, 10, 1))
    assert len(urls) == 15 and len(set(urls)) == 15
    assert len(problems) == 1 and "15 URLs (NEWSQ_DISCOVERY_MAX_URLS)" in problems[0]


def test_discovery_stops_at_its_time_bound_and_the_callers_deadline(
    server: HostileServer, settings: Settings, redis_client: redis.Redis
) -> None:
    slow = replace(settings, host_rate=10.0, discovery_timeout=0.5)  # 0.1 s between requests
    polite = Politeness(redis_client, slow)
    started = time.monotonic()
    urls, problems = _gather(slow, _tree(server, 40, 1), polite=polite)
    assert time.monotonic() - started < 1.5
    assert 0 < len(urls) < 40 * 40
    assert len(problems) == 1 and "0.5s (NEWSQ_DISCOVERY_TIMEOUT)" in problems[0]
    started = time.monotonic()
    _, problems = _gather(replace(slow, discovery_timeout=60), _tree(server, 40, 1),
                          polite=polite, deadline=started + 0.5)  # fmt: skip
    assert time.monotonic() - started < 1.5
    assert len(problems) == 1 and "--timeout" in problems[0]


def test_every_sitemap_fetch_and_redirect_hop_takes_its_hosts_slot(
    server: HostileServer, settings: Settings, redis_client: redis.Redis
) -> None:
    polite_settings = replace(settings, host_rate=20.0)  # one request per 50 ms
    polite = Politeness(redis_client, polite_settings)
    since = time.time()
    feed = server.url("/redirect-to?url=" + quote(_tree(server, 4, 1)))
    urls, problems = _gather(polite_settings, feed, polite=polite)
    assert len(urls) == 16 and problems == []
    times = sorted(t for t, path in server.requests if t >= since)
    assert len(times) == 1 + 1 + 4  # the redirect, the index, its children
    assert min(b - a for a, b in pairwise(times)) > 0.04, times


def test_a_polls_child_sitemaps_take_their_hosts_slot(
    server: HostileServer, settings: Settings, redis_client: redis.Redis
) -> None:
    polite_settings = replace(settings, host_rate=20.0, discovery_max_requests=4)
    store = Store.from_url(settings.database_url)
    try:
        feed = add_feed(store, _tree(server, 5, 1), polite_settings)["url"]
        since, sent = time.time(), []
        ledger, polite = (
            Ledger(redis_client, settings.key_prefix),
            Politeness(redis_client, polite_settings),
        )
        with Fetcher(polite_settings) as fetcher:
            poll = poll_feed(store, fetcher, ledger, feed, sent.extend, polite=polite)
    finally:
        store.close()
    assert poll is not None and poll.error is None
    times = _asked(server, since)
    assert len(times) == 1 + 4  # the index, then children up to the request bound
    assert len(sent) == 4 * 5  # the poll's own request is not one of the four
    assert min(b - a for a, b in pairwise(times)) > 0.04, times


# -- gzipped sitemaps served as files ----------------------------------------------------


@pytest.mark.parametrize("path", ["/sitemap.xml.gz", "/sitemap-gzip.xml.gz",
                                  "/sitemap-octets.xml.gz"])  # fmt: skip
def test_a_gzipped_sitemap_served_as_a_gzip_file_is_read(
    server: HostileServer, fetcher: Fetcher, path: str
) -> None:
    assert expand_feed(fetcher, server.url(path)) == ([server.url("/page/gz")], None)


def test_a_gzip_typed_body_that_is_not_gzip_is_refused(
    server: HostileServer, fetcher: Fetcher
) -> None:
    urls, error = expand_feed(fetcher, server.url("/sitemap-not-gzip.xml.gz"))
    assert urls == [] and error == f"{BAD_CONTENT_TYPE} (HTTP 200)"
