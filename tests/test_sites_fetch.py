"""The sites file's fetch keys on a local server that records what it gets, with a real
Redis: ``user_agent`` and ``headers`` sent to their site only, ``user_agent`` as the
robots.txt token, ``rate`` and ``concurrency`` shared through the politeness limits."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hostile_server import SLOW_SECONDS, HostileServer

from newsq import errors
from newsq.config.settings import Settings
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import Politeness
from newsq.fetch.robots import RobotsCache
from newsq.pipeline import fetch_step
from newsq.resources import Runtime
from newsq.sites import load
from newsq.urls import host_of

AGENT = "partnerbot/2.0 (+https://example.org/contact)"
ROBOTS = "User-agent: partnerbot\nDisallow: /private\n\nUser-agent: *\nAllow: /\n"


def _with_sites(settings: Settings, tmp_path: Path, text: str, **changes: object) -> Settings:
    path = tmp_path / "sites.toml"
    path.write_text(text, encoding="utf-8")
    load.cache_clear()
    parsed = Settings.from_env({"NEWSQ_SITES_FILE": str(path)})  # checked as at start-up
    return dataclasses.replace(settings, sites_file=parsed.sites_file, **changes)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer(robots=ROBOTS) as srv:
        yield srv


def _headers(server: HostileServer, path: str) -> list[dict[str, str]]:
    return [headers for got, headers in server.headers if got == path]


def test_user_agent_and_headers_go_to_their_site_only(
    settings: Settings, tmp_path: Path, server: HostileServer
) -> None:
    with HostileServer() as other:
        headers = '{ Cookie = "consent=yes", "X-Api-Key" = "k-123", accept = "text/*" }'
        text = f'["127.0.0.1:{server.port}"]\nuser_agent = "{AGENT}"\nheaders = {headers}\n'
        with Fetcher(_with_sites(settings, tmp_path, text)) as fetcher:
            assert fetcher.fetch(server.url("/ok")).ok
            # a redirect from the site to another: the other gets none of the site's
            assert fetcher.fetch(server.url(f"/redirect-to?url={other.url('/ok')}")).ok
            # and from another site to it: only the hop to the site carries them
            assert fetcher.fetch(other.url(f"/redirect-to?url={server.url('/page/1')}")).ok
    for got in (*_headers(server, "/ok"), *_headers(server, "/redirect-to"),
                *_headers(server, "/page/1")):  # fmt: skip
        assert got["user-agent"] == AGENT
        sent = (got["cookie"], got["x-api-key"], got["accept"])
        assert sent == ("consent=yes", "k-123", "text/*")  # the site's Accept replaces ours
    assert len(_headers(other, "/ok")) == len(_headers(other, "/redirect-to")) == 1
    for got in (*_headers(other, "/ok"), *_headers(other, "/redirect-to")):
        assert got["user-agent"] == settings.user_agent
        assert "cookie" not in got and "x-api-key" not in got
        assert got["accept"].startswith("text/html")


def test_a_pattern_covers_a_domain_and_an_exact_host_wins(tmp_path: Path) -> None:
    (tmp_path / "sites.toml").write_text(
        '["*.paper.example"]\nuser_agent = "a/1"\nrate = 2\n\n'
        '["live.paper.example"]\nuser_agent = "b/1"\n\n'
        '["live.paper.example:8080"]\nconcurrency = 1\n'
    )
    sites = load(str(tmp_path / "sites.toml"))
    assert sites.for_url("https://paper.example/a").user_agent == "a/1"  # type: ignore[union-attr]
    assert sites.for_url("https://www.paper.example/a").user_agent == "a/1"  # type: ignore[union-attr]
    assert sites.for_url("https://live.paper.example/a").user_agent == "b/1"  # type: ignore[union-attr]
    assert sites.for_host("live.paper.example").rate is None  # type: ignore[union-attr]
    assert sites.for_host("LIVE.paper.example:8080").concurrency == 1  # type: ignore[union-attr]
    assert sites.for_url("https://paper.example.org/") is None
    assert sites.for_url("https://otherpaper.example/") is None


def test_the_user_agent_is_the_sites_robots_txt_token(
    redis_client: redis.Redis, settings: Settings, tmp_path: Path, server: HostileServer
) -> None:
    url = server.url("/private/1")
    with Fetcher(settings) as fetcher:
        assert RobotsCache(redis_client, settings, fetcher).allowed(url)  # newsq: allowed
    redis_client.delete(*redis_client.keys(f"{settings.key_prefix}:robots*"))
    partner = _with_sites(settings, tmp_path, f'["127.0.0.1"]\nuser_agent = "{AGENT}"\n')
    with Fetcher(partner) as fetcher:
        robots = RobotsCache(redis_client, partner, fetcher)
        assert not robots.allowed(url)  # partnerbot's group disallows it
        assert robots.allowed(server.url("/news/1"))
    assert [h["user-agent"] for h in _headers(server, "/robots.txt")] == [
        settings.user_agent, AGENT]  # fmt: skip


def test_a_worker_sends_the_sites_agent_and_obeys_its_robots_group(
    settings: Settings, tmp_path: Path, server: HostileServer
) -> None:
    rt = Runtime(_with_sites(settings, tmp_path, f'["127.0.0.1"]\nuser_agent = "{AGENT}"\n'))
    try:
        allowed, private = server.url("/ok"), server.url("/private/2")
        rt.ledger.enqueue([allowed, private])
        assert fetch_step(rt, allowed, hand_off=False).action == "next"
        step = fetch_step(rt, private, hand_off=False)
        assert (step.action, rt.ledger.get(private)["reason"]) == ("done", errors.ROBOTS_DISALLOWED)  # type: ignore[index]
    finally:
        rt.close()
    sent = [h["user-agent"] for path, h in server.headers]
    assert sent == [AGENT, AGENT] and [p for p, _ in server.headers] == ["/robots.txt", "/ok"]


def _fetch_politely(settings: Settings, urls: list[str], threads: int = 1) -> None:
    """``urls`` fetched by ``threads`` threads, each fetch in its host's politeness slot."""
    polite = Politeness(redis.Redis.from_url(settings.broker_url or ""), settings)
    todo = list(urls)
    lock = threading.Lock()

    def work(fetcher: Fetcher) -> None:
        while True:
            with lock:
                if not todo:
                    return
                url = todo.pop()
            host = host_of(url)
            assert polite.wait(host, 10.0)
            try:
                assert fetcher.fetch(url).ok, url
            finally:
                polite.release(host)

    with Fetcher(settings) as fetcher:
        pool = [threading.Thread(target=work, args=(fetcher,)) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(30)


def test_a_sites_rate_spaces_its_requests(
    settings: Settings, tmp_path: Path, server: HostileServer
) -> None:
    # NEWSQ_HOST_RATE is 0 (no limit) in these settings: the file's 8/s is the limit
    limited = _with_sites(settings, tmp_path, '["127.0.0.1"]\nrate = 8\n')
    _fetch_politely(limited, [server.url(f"/page/{i}") for i in range(5)], threads=3)
    times = sorted(t for t, path in server.requests if path.startswith("/page/"))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5 and min(gaps) > 0.1, gaps  # 0.125 s apart, however many threads


def test_host_rates_win_over_the_file_and_zero_lifts_the_limit(
    redis_client: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    text = '["a.example"]\nrate = 0.1\n\n["b.example"]\nrate = 0\n'
    both = _with_sites(settings, tmp_path, text, host_rate=1.0, host_rates=(("a.example", 0.0),))
    polite = Politeness(redis_client, both)
    assert (polite.rate_for("a.example"), polite.rate_for("b.example:8080")) == (0.0, 0.0)
    assert polite.rate_for("c.example") == 1.0
    for host in ("a.example", "b.example"):
        assert all(polite.acquire(host) == 0.0 for _ in range(3))
    assert polite.acquire("c.example") == 0.0 and polite.acquire("c.example") > 0.5
    file_only = _with_sites(settings, tmp_path, text, host_rate=1.0)
    assert Politeness(redis_client, file_only).rate_for("www.a.example") == 1.0  # exact only
    assert Politeness(redis_client, file_only).rate_for("a.example") == 0.1


@pytest.mark.parametrize("cap", [1, 2])
def test_a_sites_concurrency_caps_its_requests_in_flight(
    settings: Settings, tmp_path: Path, server: HostileServer, cap: int
) -> None:
    capped = _with_sites(settings, tmp_path, f'["127.0.0.1"]\nconcurrency = {cap}\n',
                         host_concurrency=4)  # fmt: skip
    started = time.monotonic()
    _fetch_politely(capped, [server.url(f"/slow/{i}") for i in range(4)], threads=4)
    assert server.most_in_flight == cap
    assert time.monotonic() - started >= 4 / cap * SLOW_SECONDS * 0.9
