"""robots.txt against a local server and a real Redis: parsing, caching, RFC 9309 fallbacks."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from hostile_server import HostileServer

from newsq.config.settings import Settings
from newsq.fetch import politeness, robots
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import MAX_CRAWL_DELAY, Politeness
from newsq.fetch.robots import ALLOWED, FAILURE_TTL, RobotsCache, agent_token
from newsq.pipeline import Step, fetch_step, process_step
from newsq.records import TERMINAL
from newsq.resources import Runtime
from newsq.workers.commands import cmd_fetch
from tests.cli import newsq_env, run_newsq

# loaded at collection: trafilatura's import warns, which would be an error in a test
importlib.import_module("newsq.clean.extract")

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


# -- in the pipeline: its fetch step, in process -------------------------------------


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(dataclasses.replace(settings, fetch_retries=1, fetch_timeout=1.0))
    yield rt
    rt.close()


def _state(rt: Runtime, url: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in rt.redis.hgetall(rt.ledger.key(url)).items()}


def test_an_unreachable_robots_txt_is_retried_then_fails(runtime: Runtime) -> None:
    with HostileServer(robots=503) as server:
        url = server.url("/ok")
        runtime.ledger.enqueue([url])
        first = fetch_step(runtime, url, 0, hand_off=False)
        assert (first.action, first.reason) == ("retry", "http_error")
        assert first.countdown >= FAILURE_TTL  # so the retry finds the failure expired
        assert _state(runtime, url)["state"] == "queued"
        last = fetch_step(runtime, url, 1, hand_off=False)
        assert not any(path == "/ok" for _, path in server.requests)
    assert (last.action, last.state, last.reason) == ("done", "failed", "http_error")
    (row,) = runtime.store.iter_outcomes(states=("failed",))
    assert (row["reason"], row["detail"]) == ("http_error", "robots.txt HTTP 503")
    assert row["attempts"] == 2


def test_a_robots_txt_back_after_an_outage_lets_the_retry_fetch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(robots, "FAILURE_TTL", 0.2)
    with HostileServer(robots=500) as server:
        url = server.url("/ok")
        runtime.ledger.enqueue([url])
        assert fetch_step(runtime, url, 0, hand_off=False).action == "retry"
        server.robots = "User-agent: *\nDisallow: /private\n"
        time.sleep(0.3)
        again = fetch_step(runtime, url, 1, hand_off=False)
        assert again.action == "next" and again.page is not None
        assert _robots_requests(server) == 2


def test_a_robots_txt_that_times_out_is_retried_with_its_reason(runtime: Runtime) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/a"
        runtime.ledger.enqueue([url])
        first = fetch_step(runtime, url, 0, hand_off=False)
        last = fetch_step(runtime, url, 1, hand_off=False)
    assert (first.action, first.reason) == ("retry", "timeout")
    assert (last.state, last.reason) == ("failed", "timeout")


def _fetched(rt: Runtime, url: str, timeout: float = 5.0) -> Step:
    """``url``'s fetch step as a worker and the frontier's dispatcher carry it: parked
    for its host's turn, it is fetched with the slot the dispatcher grants it."""
    deadline = time.monotonic() + timeout
    step = fetch_step(rt, url, hand_off=False)
    while step.action == "parked":
        assert time.monotonic() < deadline, f"{url} never dispatched"
        _, wait, grants = rt.frontier.dispatch("test", 10, lease_seconds=1.0)
        rt.frontier.sent()
        grant = next((g for g in grants if g.url == url), None)
        if grant is None:
            time.sleep(min(max(wait, 0.01), 0.1))
            continue
        step = fetch_step(rt, url, grant.attempt, hand_off=False, lease=grant.lease,
                          interval=grant.interval)  # fmt: skip
    return step


def test_a_huge_crawl_delay_keeps_every_url_of_the_host_finite(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(politeness, "MAX_CRAWL_DELAY", 0.5)  # 60 s, compressed
    with HostileServer(robots="User-agent: *\nCrawl-delay: 99999999\n") as server:
        urls = [server.url("/ok"), server.url("/conditional")]
        runtime.ledger.enqueue(urls)
        for url in urls:
            step = _fetched(runtime, url, timeout=3.0)  # each waits one capped delay
            assert step.action == "next" and step.page is not None
            step = process_step(runtime, url, step.page)
            assert step.state in TERMINAL, (url, step)


def test_the_robots_txt_request_takes_its_hosts_politeness_slot(settings: Settings) -> None:
    rt = Runtime(dataclasses.replace(settings, host_rate=2.0))  # a request every 0.5 s
    try:
        with HostileServer() as server:
            url = server.url("/ok")
            rt.fetcher.fetch(server.url("/warm-up"))  # the client's first request is slow
            rt.ledger.enqueue([url])
            step = _fetched(rt, url)
            assert step.action == "next" and step.page is not None
            times = {path: when for when, path in server.requests}
    finally:
        rt.close()
    assert times["/ok"] - times["/robots.txt"] >= 0.45  # one host, one request per slot


# -- newsq fetch: the pipeline's verdict ---------------------------------------------


def test_newsq_fetch_of_a_disallowed_url_says_so_and_exits_1() -> None:
    with HostileServer(robots="User-agent: *\nDisallow: /private\n") as server:
        done = run_newsq("fetch", server.url("/private/a"),
                         env=newsq_env(NEWSQ_ALLOW_PRIVATE="1"), timeout=60)  # fmt: skip
        asked = [path for _, path in server.requests]
    assert (done.returncode, done.stderr) == (1, "")
    shown = json.loads(done.stdout)
    assert (shown["ok"], shown["reason"], shown["status"]) == (False, "robots_disallowed", None)
    assert shown["detail"] == "robots.txt disallows it"
    assert asked == ["/robots.txt"]  # the page itself never requested


def test_newsq_fetch_of_a_site_whose_robots_txt_fails_or_allows(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with HostileServer(robots=503) as server:
        refused = cmd_fetch(argparse.Namespace(url=server.url("/ok")), settings)
        down = json.loads(capsys.readouterr().out)
        server.robots = "User-agent: *\nDisallow: /private\n"
        fine = cmd_fetch(argparse.Namespace(url=server.url("/ok")), settings)
        up = json.loads(capsys.readouterr().out)
    assert refused == 1 and (down["ok"], down["reason"]) == (False, "http_error")
    assert down["detail"] == "robots.txt HTTP 503"  # the pipeline retries it, then fails
    assert fine == 0 and (up["ok"], up["status"]) == (True, 200) and "detail" not in up
