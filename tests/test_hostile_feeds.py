"""Hostile feeds and sitemaps from a local server: what remote bodies must never do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hostile_server import HostileServer

from newsq.config.settings import Settings
from newsq.feeds import parse as feeds
from newsq.feeds.intake import expand_feed
from newsq.fetch.client import Fetcher

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
