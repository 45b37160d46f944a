"""The fetch stage against a real, hostile HTTP server on 127.0.0.1.

Hostile header values go through the server's ``/raw/`` route (header bytes sent as
given), then a seeded fuzz feeds each parser a server's header reaches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Iterator

import pytest
from hostile_server import HostileServer, raw_path

from newsq import errors
from newsq.config.settings import AllowPrivate, Settings
from newsq.errors import ConfigError
from newsq.fetch import client
from newsq.fetch.client import Fetcher, ascii_int, retry_after
from newsq.fetch.decoding import BodyError, BoundedDecoder, charset_codec, decode_html, media_type
from newsq.fetch.netguard import Refused, prepare

TIMEOUT = 2.0
FUZZ_CASES = 3000


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


# The header lines each case sends, and the outcome expected: (ok, reason, status).
RAW_CASES = [
    # Arabic-Indic and fullwidth digits: int() reads them, a server must not get that far
    (503, ["Retry-After: ٣٠".encode(), b"Content-Type: text/html"], (False, "http_error", 503)),
    (429, ["Retry-After: １２".encode(), b"Content-Type: text/html"], (False, "http_error", 429)),
    (503, ["Retry-After: ²".encode(), b"Content-Type: text/html"], (False, "http_error", 503)),
    (503, [b"Retry-After: Wed, 21 Oct 99999 07:28:00 GMT"], (False, "http_error", 503)),
    # bytes-to-bytes codecs and IDNA as a charset: the page is decoded by detection
    (200, [b"Content-Type: text/html; charset=zlib"], (True, None, 200)),
    (200, [b"Content-Type: text/html; charset=base64"], (True, None, 200)),
    (200, [b"Content-Type: text/html; charset=rot13"], (True, None, 200)),
    (200, [b"Content-Type: text/html; charset=hex"], (True, None, 200)),
    (200, [b"Content-Type: text/html; charset=punycode"], (True, None, 200)),
    (200, [b"Content-Type: text/html; charset=idna"], (True, None, 200)),
    # Location that is no URL
    (302, [b"Location: http://[::1"], (False, "invalid_url", 302)),
    (302, [b"Location: http://a:99999/"], (False, "invalid_url", 302)),
    (302, [b"Location: http://a\x01b/"], (False, "invalid_url", 302)),
    (302, ["Location: http://exa\u200bmple\u0301.com/".encode()], (False, "invalid_url", 302)),
    (200, [b"Content-Type: text/html", "Content-Length: ٣".encode()], (False, None, None)),
]


@pytest.mark.parametrize(("status", "lines", "expected"), RAW_CASES)
def test_hostile_header_ends_with_a_reason(
    fetcher: Fetcher,
    server: HostileServer,
    status: int,
    lines: list[bytes],
    expected: tuple[bool, str | None, int | None],
) -> None:
    result = fetcher.fetch(server.url(raw_path(status, *lines)))
    ok, reason, _ = expected
    if reason is None and not ok:  # h11 refuses the framing: a lost connection, not a crash
        assert (result.ok, result.reason) == (False, errors.CONNECTION_ERROR)
    else:
        assert (result.ok, result.reason, result.status) == expected
    if ok:
        assert result.text and "Hello." in result.text


def test_strict_ascii_numbers() -> None:
    assert retry_after("٣٠") is None and retry_after("１２") is None and retry_after("²") is None
    assert retry_after(" 120 ") == 120.0
    assert retry_after("9" * 25) == 1e25 and retry_after("9" * 31) is None
    assert ascii_int("42") == 42 and ascii_int("٤٢") is None and ascii_int("-1") is None


def test_charset_names_go_through_the_whatwg_list() -> None:
    for name in ("zlib", "base64", "rot13", "hex", "punycode", "idna", "utf_8", "uu", "bz2"):
        assert charset_codec(name) is None, name
    assert charset_codec("iso-2022-kr") is None  # WHATWG's "replacement": never decoded
    assert charset_codec(" LATIN1 ").name == "windows-1252"  # type: ignore[union-attr]
    text, used = decode_html("café".encode("cp1252"), "zlib")
    assert (text, used) == ("café", "cp1252")


# -- fuzz ------------------------------------------------------------------------------

_PIECES = [
    "0", "9", "٣", "１", "²", " ", "\t", ";", ",", "=", '"', "'", "[", "]", ":", "/", "//",
    "?", "#", "%", "@", "\\", "\x00", "\x7f", "\r", "é", "\u200b", "\ud800", "charset=",
    "zlib", "base64", "utf-8", "punycode", "text/html", "gzip", "deflate", "http://",
    "https://", "::1", "GMT", "Wed, 21 Oct 2015", "07:28:00", "-9999", "+2400", "W/",
]  # fmt: skip


def _header(rng: random.Random) -> str:
    """A header value as httpx hands it over: bytes decoded as UTF-8, else Latin-1."""
    if rng.random() < 0.5:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    return "".join(rng.choice(_PIECES) for _ in range(rng.randrange(12)))


def _fuzz(check: Callable[[str], object], seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(FUZZ_CASES):
        value = _header(rng)
        try:
            check(value)
        except Exception as exc:  # the assertion names the input
            raise AssertionError(f"{check.__name__}({value!r}) raised {exc!r}") from exc


def _content_type(value: str) -> None:
    mtype, charset = media_type(value)
    charset_codec(charset)
    decode_html(b"<html><p>caf\xe9</p></html>", charset)
    client.accepts("page", mtype)


def _location(value: str) -> None:
    with contextlib.suppress(client._Failed, Refused):
        prepare(client._redirect_target("http://example.com/a/", value), AllowPrivate())


def _content_encoding(value: str) -> None:
    try:
        decoder = BoundedDecoder(value, 1000)
        decoder.feed(b"\x1f\x8b\x08\x00garbage")
        decoder.flush()
    except BodyError:
        pass


def _conditional(value: str) -> None:
    sent = client._sendable({"If-None-Match": value, "If-Modified-Since": value})
    for sent_value in sent.values():
        sent_value.encode("ascii")


@pytest.mark.parametrize(
    "check",
    [retry_after, ascii_int, _content_type, _location, _content_encoding, _conditional],
    ids=lambda f: f.__name__.strip("_"),
)
def test_fuzzed_header_never_raises(check: Callable[[str], object]) -> None:
    _fuzz(check, seed=15)


def test_no_cookie_is_kept_or_sent(fetcher: Fetcher, server: HostileServer) -> None:
    # a site setting a cookie on every page grew the Cookie header of every later
    # request, to any site, for the worker's life
    for _ in range(3):
        assert fetcher.fetch(server.url("/cookie")).ok
    assert server.cookie_headers[-3:] == ["", "", ""]


@pytest.mark.parametrize(
    "agent", ["newsq/1\nX-Injected: 1", "newsq/1\rX: 1", "newsq\x00", "newsq é"]
)
def test_a_user_agent_that_cannot_be_a_header_is_refused(agent: str) -> None:
    refused = r"^NEWSQ_USER_AGENT: .* (must be printable ASCII|holds a control character)"
    with pytest.raises(ConfigError, match=refused):
        Settings.from_env({"NEWSQ_USER_AGENT": agent})
