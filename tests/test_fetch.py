"""The fetch stage against a real, hostile HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from hostile_server import HostileServer

from newsq import errors
from newsq.config.settings import AllowPrivate, Settings
from newsq.fetch.client import Fetcher, retry_after

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def fetcher() -> Iterator[Fetcher]:
    settings = Settings(
        allow_private=AllowPrivate(all=True),
        fetch_timeout=TIMEOUT,
        max_bytes=2_000_000,
        max_redirects=5,
    )
    with Fetcher(settings) as f:
        yield f


HOSTILE_CASES = [
    ("/silent", errors.TIMEOUT, None),
    ("/drip", errors.TIMEOUT, 200),
    ("/drip-headers", errors.TIMEOUT, None),
    ("/huge-length", errors.TOO_LARGE, 200),
    ("/endless", errors.TOO_LARGE, 200),
    ("/gzip-bomb", errors.TOO_LARGE, 200),
    ("/loop-a", errors.TOO_MANY_REDIRECTS, 302),
    ("/chain/9", errors.TOO_MANY_REDIRECTS, 301),
    ("/reset", errors.CONNECTION_ERROR, 200),
    ("/binary", errors.DECODE_ERROR, 200),
    ("/pdf", errors.BAD_CONTENT_TYPE, 200),
    ("/404", errors.HTTP_ERROR, 404),
    ("/503", errors.HTTP_ERROR, 503),
    ("/429", errors.HTTP_ERROR, 429),
]


@pytest.mark.parametrize(("path", "reason", "status"), HOSTILE_CASES)
def test_hostile_case_gives_reason_within_deadline(
    fetcher: Fetcher, server: HostileServer, path: str, reason: str, status: int | None
) -> None:
    started = time.monotonic()
    result = fetcher.fetch(server.url(path))
    took = time.monotonic() - started
    assert (result.ok, result.reason, result.status) == (False, reason, status)
    assert took < TIMEOUT + 1.0
    assert result.elapsed_ms <= took * 1000 + 1


def test_retryable_outcomes(fetcher: Fetcher, server: HostileServer) -> None:
    assert fetcher.fetch(server.url("/503")).retryable
    assert fetcher.fetch(server.url("/silent")).retryable
    assert not fetcher.fetch(server.url("/404")).retryable
    assert not fetcher.fetch(server.url("/pdf")).retryable


def test_retry_after_seconds_and_date(fetcher: Fetcher, server: HostileServer) -> None:
    assert fetcher.fetch(server.url("/503")).retry_after == 7.0
    far = fetcher.fetch(server.url("/429")).retry_after
    assert far is not None and far > 365 * 86400
    assert retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    assert retry_after("soon") is None


def test_plain_page(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/ok"))
    assert result.ok and result.status == 200 and result.reason is None
    assert result.text is not None and "Hello." in result.text
    assert result.bytes == len(result.text.encode())
    assert result.headers["etag"] == '"v1"'
    assert result.to_json()["final_url"] == server.url("/ok")


def test_gzip_page_is_decompressed(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/gzip-page"))
    assert result.ok and result.text is not None and "Hello." in result.text


def test_redirect_chain_within_limit(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/chain/5"))
    assert result.ok and result.redirects == 5
    assert result.final_url == server.url("/chain/0")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/wrong-charset", "Un café à Paris"), ("/unknown-charset", "Grüße aus Köln")],
)
def test_bad_charset_keeps_the_page(
    fetcher: Fetcher, server: HostileServer, path: str, expected: str
) -> None:
    result = fetcher.fetch(server.url(path))
    assert result.ok and result.text is not None and expected in result.text


def test_meta_charset_used_when_header_has_none(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/meta-charset"))
    assert result.ok and result.text is not None and "Привет" in result.text


def test_missing_content_type_is_sniffed(fetcher: Fetcher, server: HostileServer) -> None:
    assert fetcher.fetch(server.url("/no-type")).ok


def test_feed_kind_returns_bytes(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/feed"), kind="feed")
    assert result.ok and result.body is not None and result.body.startswith(b"<?xml")
    assert not fetcher.fetch(server.url("/feed")).ok  # an RSS type is not a page
    assert fetcher.fetch(server.url("/feed")).reason == errors.BAD_CONTENT_TYPE


def test_conditional_get_304(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/conditional"), headers={"If-None-Match": '"v1"'})
    assert result.ok and result.status == 304 and result.bytes == 0


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "http:///nohost", "http://a/" + "x" * 2100],
)
def test_invalid_urls(fetcher: Fetcher, url: str) -> None:
    assert fetcher.fetch(url).reason == errors.INVALID_URL


def test_connection_refused_and_dns_failure(fetcher: Fetcher) -> None:
    with HostileServer() as gone:
        url = gone.url("/ok")
    assert fetcher.fetch(url).reason == errors.CONNECTION_ERROR
    assert fetcher.fetch("http://no-such-host.invalid/").reason == errors.CONNECTION_ERROR


def test_redirect_to_other_scheme_is_invalid(fetcher: Fetcher, server: HostileServer) -> None:
    result = fetcher.fetch(server.url("/redirect-to?url=file:///etc/passwd"))
    assert (result.reason, result.redirects) == (errors.INVALID_URL, 1)


def test_one_client_reuses_connections(fetcher: Fetcher, server: HostileServer) -> None:
    before = server.connections
    for _ in range(5):
        assert fetcher.fetch(server.url("/ok")).ok
    assert server.connections - before <= 1


def test_threads_share_one_fetcher(fetcher: Fetcher, server: HostileServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(fetcher.fetch, [server.url(f"/page/{i}") for i in range(64)]))
    assert all(r.ok for r in results)


def test_small_cap_counts_decompressed_bytes(server: HostileServer) -> None:
    settings = Settings(allow_private=AllowPrivate(all=True), fetch_timeout=TIMEOUT, max_bytes=50)
    with Fetcher(settings) as small:
        assert small.fetch(server.url("/gzip-page")).reason == errors.TOO_LARGE
        bigger = dataclasses.replace(settings, max_bytes=10_000)
    with Fetcher(bigger) as ok:
        assert ok.fetch(server.url("/gzip-page")).ok
