"""robots.txt against a local server and a real Redis: parsing, caching, RFC 9309 fallbacks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import redis
from hostile_server import HostileServer

from newsq.config.settings import Settings
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import MAX_CRAWL_DELAY, Politeness
from newsq.fetch.robots import ALLOWED, FAILURE_TTL, RobotsCache, agent_token

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


@pytest.mark.parametrize("status", [404, 410])
def test_no_file_allows_everything(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher, status: int
) -> None:
    with HostileServer(robots=status) as server:
        cache = RobotsCache(redis_client, settings, fetcher)
        assert cache.check(server.url("/a")) == ALLOWED
        assert cache.check(server.url("/b")) == ALLOWED
        assert _robots_requests(server) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_server_error_disallows_for_now_with_the_fetch_to_retry(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher, status: int
) -> None:
    with HostileServer(robots=status) as server:
        cache = RobotsCache(redis_client, settings, fetcher)
        first, second = cache.check(server.url("/a")), cache.check(server.url("/b"))
        assert _robots_requests(server) == 1  # the failure is shared while it lasts
    for verdict in (first, second):
        assert not verdict.allowed and verdict.failure is not None
        assert (verdict.reason, verdict.failure.status) == ("http_error", status)
        assert verdict.failure.retryable and verdict.failure.retry_after == FAILURE_TTL
        assert verdict.detail == f"robots.txt HTTP {status}"


def test_an_unreachable_server_disallows_for_now(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher
) -> None:
    with HostileServer() as gone:
        url = gone.url("/a")
    verdict = RobotsCache(redis_client, settings, fetcher).check(url)
    assert not verdict.allowed and verdict.failure is not None and verdict.failure.retryable
    assert (verdict.reason, verdict.detail) == ("connection_error", "robots.txt connection_error")


def _check(redis_client: redis.Redis, settings: Settings, fetcher: Fetcher, robots: str,
           paths: list[str]) -> dict[str, bool]:  # fmt: skip
    with HostileServer(robots=robots) as server:
        cache = RobotsCache(redis_client, settings, fetcher)
        return {path: cache.allowed(server.url(path)) for path in paths}


def test_the_longest_matching_rule_wins(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher
) -> None:
    robots = "User-agent: *\nDisallow: /news\nAllow: /news/public\nDisallow: /news/public/x\n"
    paths = ["/news/public/a", "/news/a", "/news/public/x1", "/newsroom", "/about"]
    assert _check(redis_client, settings, fetcher, robots, paths) == {
        "/news/public/a": True,  # first-match parsers block it under "Disallow: /news"
        "/news/a": False,
        "/news/public/x1": False,
        "/newsroom": False,
        "/about": True,
    }


def test_star_and_dollar_are_wildcards(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher
) -> None:
    robots = "User-agent: *\nDisallow: /*.pdf$\nDisallow: /search*q=\nAllow: /*/open$\n"
    paths = ["/a/b.pdf", "/a/b.pdf?page=2", "/search?lang=en&q=x", "/search?lang=en",
             "/x/open", "/x/open/more"]  # fmt: skip
    assert _check(redis_client, settings, fetcher, robots, paths) == {
        "/a/b.pdf": False,
        "/a/b.pdf?page=2": True,  # "$" ends the match
        "/search?lang=en&q=x": False,
        "/search?lang=en": True,
        "/x/open": True,
        "/x/open/more": True,
    }


@pytest.mark.parametrize(
    ("robots", "allowed"),
    [
        ("User-agent: news\nDisallow: /\n", True),  # not our product token
        ("User-agent: news\nDisallow: /\n\nUser-agent: *\nDisallow: /a\n", False),
        ("User-agent: NewsQ\nDisallow: /a\n", False),  # ours, in any case
        ("User-agent: newsqbot\nDisallow: /\n", True),
        ("User-agent: *\nDisallow: /a\n\nUser-agent: newsq\nAllow: /\n", True),
    ],
)
def test_a_group_applies_to_our_product_token_whole(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher, robots: str, allowed: bool
) -> None:
    assert _check(redis_client, settings, fetcher, robots, ["/a"]) == {"/a": allowed}


def test_crawl_delay_is_capped(
    redis_client: redis.Redis, settings: Settings, fetcher: Fetcher
) -> None:
    with HostileServer(robots="User-agent: *\nCrawl-delay: 99999999\n") as server:
        assert RobotsCache(redis_client, settings, fetcher).crawl_delay(server.url("/")) == 60.0
        polite = Politeness(redis_client, settings)
        host = f"127.0.0.1:{server.port}"
        assert polite.acquire(host) == 0.0
        assert MAX_CRAWL_DELAY - 1 < polite.acquire(host) <= MAX_CRAWL_DELAY


def test_agent_token() -> None:
    assert agent_token("newsq/0.1 (+https://example.com)") == "newsq"
    assert agent_token("") == "*"
