"""The fetch stage: one URL in, one :class:`~newsq.records.FetchResult` out.

A worker process makes one :class:`Fetcher` (one httpx client, one connection pool) and
shares it between its threads. Every outcome, good or bad, is a result with a reason
code; ``fetch`` raises only for programming errors. What it guarantees:

- every hop of a redirect chain is validated and SSRF-checked (:mod:`newsq.fetch.netguard`)
  and connected to the address that was checked; at most ``max_redirects`` hops, loops
  caught;
- the whole request, headers to last byte, ends by ``fetch_timeout``, however slowly the
  server talks;
- at most ``max_bytes`` of body are accepted, counted after decompression while
  streaming, so an endless or bomb body never sits in memory;
- each hop carries its site's ``user_agent`` and ``headers`` of ``NEWSQ_SITES_FILE``
  (:mod:`newsq.sites`), and no other site's.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from http.cookiejar import Cookie, CookieJar, CookiePolicy
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from newsq import errors
from newsq.config.settings import Settings
from newsq.fetch.decoding import (
    ACCEPT_ENCODING,
    BodyError,
    BoundedDecoder,
    decode_html,
    looks_like_html,
    media_type,
)
from newsq.fetch.netguard import GuardedBackend, Refused, prepare
from newsq.records import FetchResult
from newsq.sites import sites_of

log = logging.getLogger(__name__)

Kind = Literal["page", "feed", "robots", "archive"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
GZIP_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/octet-stream"})
"""Types a gzipped sitemap (``sitemap.xml.gz``) is served as; its body must be gzip."""
GZIP_MAGIC = b"\x1f\x8b"
KEPT_HEADERS = (
    "etag", "last-modified", "cache-control", "expires", "content-language",
    "content-range",  # of a WARC file read in byte ranges (newsq.backfill.source)
)  # fmt: skip
POOL_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=30)
_ACCEPT = {
    "page": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
    "feed": "application/rss+xml,application/atom+xml,application/xml;q=0.9,text/xml;q=0.9,"
    "application/feed+json;q=0.8,*/*;q=0.1",
    "robots": "text/plain,*/*;q=0.1",
    "archive": "application/warc,*/*;q=0.1",
}


class _Failed(Exception):
    """Ends a fetch early with a reason code (internal to this module)."""

    def __init__(
        self,
        reason: str,
        detail: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass
class _Hop:
    """Where a fetch has got to: the URL asked for, the current hop, what it saw."""

    url: str
    current: str = ""
    status: int | None = None
    content_type: str | None = None
    redirects: int = 0
    deadline: float = 0.0
    """When the whole fetch ends (``time.monotonic()``)."""

    def __post_init__(self) -> None:
        self.current = self.current or self.url


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _redirect_target(current: str, location: str) -> str:
    """The absolute URL a Location header points to; :class:`_Failed` when it is none."""
    try:
        return urljoin(current, location.strip())
    except ValueError as exc:  # "http://[::1": urlsplit refuses it
        raise _Failed(errors.INVALID_URL, f"bad Location {location[:200]!r}: {exc}") from None


def _check_location(response: httpx.Response) -> None:
    """Refuse a redirect whose Location httpx cannot read, before httpx itself raises a
    protocol error for it (it builds the next request even when not following)."""
    location = response.headers.get("location")
    if response.status_code not in REDIRECT_STATUSES or location is None:
        return
    try:
        url = httpx.URL(location)
        if url.scheme and not url.host:
            url = url.copy_with(host=response.request.url.host)
        if url.is_relative_url:
            response.request.url.join(url)
    except (httpx.InvalidURL, ValueError) as exc:
        detail = f"bad Location {location[:200]!r}: {exc}"
        raise _Failed(errors.INVALID_URL, detail, response.status_code) from None


def _sendable(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers that can go on the wire as they are: an ETag a server sent
    may hold bytes httpx cannot encode (it raises) or h11 refuses; those are dropped."""
    return {
        name: value
        for name, value in (headers or {}).items()
        if value.isascii() and value.isprintable() and name.isascii() and name.isprintable()
    }


def _elapsed_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def accepts(kind: Kind, mtype: str | None) -> bool:
    """True when a response of media type ``mtype`` suits ``kind`` (None: not declared)."""
    if mtype is None:
        return True  # sniffed after reading (pages) or left to the parser (feeds, robots)
    if kind == "page":
        return mtype in PAGE_TYPES
    if kind == "archive":  # a WARC file's bytes, served as whatever the server likes
        return True
    if kind == "feed":
        return mtype.startswith("text/") or "xml" in mtype or "json" in mtype or mtype in GZIP_TYPES
    return mtype.startswith("text/")


UNDONE = frozenset({"content-encoding", "transfer-encoding", "content-length"})
"""Headers that no longer describe the body once its encodings are undone."""


def raw_http(response: httpx.Response, body: bytes) -> tuple[str, bytes]:
    """The HTTP head of ``response`` as it came, and ``body``: the bytes as fetched once
    their transfer and content encodings were undone (the head says so: those headers
    are kept renamed ``X-Newsq-Original-*``, with the body's own Content-Length), as
    Common Crawl archives a page."""
    version = response.http_version or "HTTP/1.1"
    lines = [f"{version} {response.status_code} {response.reason_phrase}".rstrip()]
    for name, value in response.headers.raw:
        key, shown = name.decode("latin-1"), value.decode("latin-1")
        if key.lower() in UNDONE:
            key = f"X-Newsq-Original-{key}"
        lines.append(f"{key}: {shown}")
    lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines) + "\r\n\r\n", body


def ascii_int(value: str | None) -> int | None:
    """The number a header value of ASCII digits spells; None for anything else.

    ``str.isdigit`` and ``int`` accept Arabic-Indic, fullwidth and superscript digits
    (and ``int("²")`` raises), so neither is used on what a server sent.
    """
    value = (value or "").strip(" \t")
    if not value or len(value) > 30 or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After value (delta seconds or HTTP date) asks for; None if unreadable."""
    if not value:
        return None
    seconds = ascii_int(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        at = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):  # what a bad date raises
        return None
    now = time.time() if now is None else now
    return max(0.0, at - now)


class _NoCookies(CookiePolicy):
    """Keep no cookie and send none: one client serves every site for the worker's life,
    and a site setting cookies on each page would grow every later request's header."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: object) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: object) -> bool:
        return False

    def path_return_ok(self, path: str, request: object) -> bool:
        return False


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every fetcher and webhook client in this process: certifi's
    CA bundle, the environment's ignored. One, as loading the bundle costs ~20 ms."""
    return httpx.create_ssl_context(trust_env=False)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that connects through ``backend``: each
    connection goes to the address the guard checked (the fetcher's, the webhooks')."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits) -> None:
        context = tls_context()  # httpx's own pool, unused, would load the CA bundle too
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class Fetcher:
    """Fetches URLs safely (politeness is the caller's, see :mod:`newsq.fetch.politeness`).

    One per worker process; thread-safe.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sites = sites_of(settings.sites_file)
        self._backend = GuardedBackend(settings.allow_private)
        self._client = httpx.Client(
            transport=PinnedTransport(self._backend, POOL_LIMITS),
            follow_redirects=False,
            trust_env=False,
            event_hooks={"response": [_check_location]},
            cookies=CookieJar(_NoCookies()),
            headers={"User-Agent": settings.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
        )

    def close(self) -> None:
        self._client.close()
        self._backend.close()

    def user_agent(self, url: str) -> str:
        """The User-Agent sent to ``url``'s site: its ``user_agent`` in the sites file,
        else ``NEWSQ_USER_AGENT``."""
        site = self._sites.for_url(url)
        return site.user_agent if site and site.user_agent else self.settings.user_agent

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(
        self,
        url: str,
        *,
        kind: Kind = "page",
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
        before_hop: Callable[[str], None] | None = None,
    ) -> FetchResult:
        """Fetch ``url``; never raises for network or HTTP outcomes.

        ``deadline`` (a ``time.monotonic()`` time) ends the fetch before
        ``fetch_timeout`` would; ``before_hop(url)`` runs before each redirect hop is
        requested (feed discovery takes the hop's politeness slot there) and may raise
        :class:`~newsq.fetch.netguard.Refused` to end the fetch with its reason.

        On failure returns a result with ``ok=False`` and a contract reason code
        (``invalid_url``, ``blocked_address``, ``timeout``, ``connection_error``,
        ``too_many_redirects``, ``http_error``, ``too_large``, ``bad_content_type``,
        ``decode_error``).
        """
        start = time.monotonic()
        end = start + self.settings.fetch_timeout
        state = _Hop(url=url, deadline=end if deadline is None else min(end, deadline))
        try:
            with self._backend.deadline(state.deadline):
                result = self._follow(state, kind, _sendable(headers), start, before_hop)
        except _Failed as exc:
            result = self._failure(state, start, exc.reason, str(exc), exc.status, exc.retry_after)
        except Refused as exc:
            result = self._failure(state, start, exc.reason, str(exc))
        except httpx.TimeoutException as exc:
            result = self._failure(state, start, errors.TIMEOUT, str(exc) or "timed out")
        except httpx.InvalidURL as exc:
            result = self._failure(state, start, errors.INVALID_URL, str(exc))
        except httpx.UnsupportedProtocol as exc:
            result = self._failure(state, start, errors.INVALID_URL, str(exc))
        except (httpx.TransportError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            result = self._failure(state, start, errors.CONNECTION_ERROR, detail)
        if result.ok:
            log.info(
                "fetched %s: %s %s, %d bytes in %d ms",
                url,
                result.status,
                result.content_type,
                result.bytes,
                result.elapsed_ms,
            )
        return result

    # -- internals -------------------------------------------------------------------

    def _follow(
        self,
        state: _Hop,
        kind: Kind,
        headers: dict[str, str],
        start: float,
        before_hop: Callable[[str], None] | None,
    ) -> FetchResult:
        # 1. validate and follow redirects by hand, checking every hop
        seen = {state.url}
        first_origin = _origin(state.url)
        deadline = state.deadline
        while True:
            state.current = prepare(state.current, self.settings.allow_private)
            if state.redirects and before_hop is not None:
                before_hop(state.current)
            # the caller's headers (conditional GET) only go to the site they were meant for,
            # and each site's own (sites file) to that site
            hop_headers = httpx.Headers({"Accept": _ACCEPT[kind]})  # names in any case
            site = self._sites.for_url(state.current)
            if site is not None:
                hop_headers.update(site.headers)
                if site.user_agent:
                    hop_headers["User-Agent"] = site.user_agent
            if _origin(state.current) == first_origin:
                hop_headers.update(headers)
            timeout = httpx.Timeout(max(deadline - time.monotonic(), 0.001))
            with self._client.stream(
                "GET", state.current, headers=hop_headers, timeout=timeout
            ) as response:
                state.status = response.status_code
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    target = _redirect_target(state.current, location)
                    state.redirects += 1
                    if state.redirects > self.settings.max_redirects:
                        raise _Failed(errors.TOO_MANY_REDIRECTS, "redirect limit", state.status)
                    if target in seen:
                        raise _Failed(errors.TOO_MANY_REDIRECTS, "redirect loop", state.status)
                    log.debug("redirect %s -> %s", state.current, target)
                    seen.add(target)
                    state.current = target
                    continue
                # 2. status, type and size checks before reading
                return self._read(state, response, kind, start)

    def _read(self, state: _Hop, response: httpx.Response, kind: Kind, start: float) -> FetchResult:
        status = response.status_code
        state.content_type = response.headers.get("content-type")
        kept = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        if status == 304:
            return self._success(state, start, b"", None, kept)
        if status >= 400 or not 200 <= status < 300:
            delay = None
            if status in (429, 503):
                delay = retry_after(response.headers.get("retry-after"))
            raise _Failed(errors.HTTP_ERROR, f"HTTP {status}", status, delay)
        mtype, charset = media_type(state.content_type)
        if not accepts(kind, mtype):
            raise _Failed(errors.BAD_CONTENT_TYPE, f"{mtype} is not a {kind} type", status)
        declared = ascii_int(response.headers.get("content-length"))
        if declared is not None and declared > self.settings.max_bytes:
            raise _Failed(errors.TOO_LARGE, f"Content-Length {declared} over the cap", status)
        # 3. stream the body, decompressing under the cap, until the deadline
        body = self._stream_body(response, state.deadline)
        if kind == "feed" and mtype in GZIP_TYPES and not body.startswith(GZIP_MAGIC):
            raise _Failed(errors.BAD_CONTENT_TYPE, f"{mtype} body is not gzip", status)
        # 4. decode
        text = None
        if kind == "page":
            if mtype is None and not looks_like_html(body):
                raise _Failed(errors.BAD_CONTENT_TYPE, "no Content-Type, not HTML", status)
            try:
                text, _ = decode_html(body, charset)
            except BodyError as exc:
                raise _Failed(exc.reason, str(exc), status) from None
            raw = raw_http(response, body) if self.settings.keep_raw else None
            return self._success(state, start, b"", text, kept, size=len(body), raw=raw)
        return self._success(state, start, body, None, kept)

    def _stream_body(self, response: httpx.Response, deadline: float) -> bytes:
        decoder = BoundedDecoder(response.headers.get("content-encoding"), self.settings.max_bytes)
        pieces: list[bytes] = []
        try:
            for chunk in response.iter_raw():
                pieces.extend(decoder.feed(chunk))
                if time.monotonic() > deadline:
                    raise _Failed(errors.TIMEOUT, "body not complete by the deadline")
            pieces.append(decoder.flush())
        except BodyError as exc:
            raise _Failed(exc.reason, str(exc), response.status_code) from None
        return b"".join(pieces)

    def _success(
        self,
        state: _Hop,
        start: float,
        body: bytes,
        text: str | None,
        headers: dict[str, str],
        *,
        size: int | None = None,
        raw: tuple[str, bytes] | None = None,
    ) -> FetchResult:
        return FetchResult(
            url=state.url,
            final_url=state.current,
            ok=True,
            status=state.status,
            reason=None,
            content_type=state.content_type,
            bytes=len(body) if size is None else size,
            elapsed_ms=_elapsed_ms(start),
            redirects=state.redirects,
            text=text,
            body=None if text is not None else body,
            headers=headers,
            raw=raw,
        )

    def _failure(
        self,
        state: _Hop,
        start: float,
        reason: str,
        detail: str,
        status: int | None = None,
        delay: float | None = None,
    ) -> FetchResult:
        log.info("fetch %s failed: %s (%s)", state.url, reason, detail)
        return FetchResult(
            url=state.url,
            final_url=state.current,
            ok=False,
            status=status if status is not None else state.status,
            reason=reason,
            content_type=state.content_type,
            bytes=0,
            elapsed_ms=_elapsed_ms(start),
            redirects=state.redirects,
            retry_after=delay,
        )
