"""robots.txt against a local server and a real Redis: parsing, caching, RFC 9309 fallbacks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import redis
from hostile_server import HostileServer

from newsq.config.settings import Settings
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import Politeness
from newsq.fetch.robots import RobotsCache, agent_token

ROBOTS = """
User-agent: otherbot
Disallow: /

User-agent: *
Disallow: /private
Crawl-delay: 2
"""


@pytest.fixture
def fetcher(settings: Settings) -> Iterator[Fetcher]:
    with Fetcher(settings) as f:
        yield f


def _robots_requests(server: HostileServer) -> int:
    return sum(1 for _, path in server.requests if path == "/robots.txt")


def test_rules_crawl_delay_and_one_fetch_for_all_workers(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher
) -> None:
    with HostileServer(robots=ROBOTS) as server:
        first = RobotsCache(redis_client, settings, fetcher)
        second = RobotsCache(redis_client, settings, fetcher)  # another worker process
        assert first.allowed(server.url("/news/1"))
        assert not first.allowed(server.url("/private/x"))
        assert not second.allowed(server.url("/private/y"))
        assert second.allowed(server.url("/news/2"))
        assert first.crawl_delay(server.url("/")) == 2.0
        assert _robots_requests(server) == 1
        # the Crawl-delay now spaces this host's requests for every worker
        polite = Politeness(redis_client, dataclasses.replace(settings, host_rate=100.0))
        host = f"127.0.0.1:{server.port}"
        assert polite.acquire(host) == 0.0
        assert polite.acquire(host) > 1.5


@pytest.mark.parametrize(("status", "allowed"), [(404, True), (410, True), (503, False)])
def test_unavailable_and_unreachable_files(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher, status: int, allowed: bool
) -> None:
    with HostileServer(robots=status) as server:
        cache = RobotsCache(redis_client, settings, fetcher)
        assert cache.allowed(server.url("/a")) is allowed
        assert cache.allowed(server.url("/b")) is allowed
        assert _robots_requests(server) == 1


def test_unreachable_server_disallows(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher
) -> None:
    with HostileServer() as gone:
        url = gone.url("/a")
    assert not RobotsCache(redis_client, settings, fetcher).allowed(url)


def test_agent_token() -> None:
    assert agent_token("newsq/0.1 (+https://example.com)") == "newsq"
    assert agent_token("") == "*"
