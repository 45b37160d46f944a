"""SSRF guard: which addresses the fetcher may reach, and a connection layer that obeys it.

Two checks, both before any byte leaves the machine:

1. :func:`prepare` validates a URL (http/https, a host, sane length) and rewrites numeric
   host spellings the way a browser or ``inet_aton`` reads them (``2130706433``,
   ``0x7f000001``, ``127.1``, ``0177.0.0.1`` are all ``127.0.0.1``); an IP literal that
   is not public is refused right there.
2. :class:`GuardedBackend`, the httpcore network backend of the fetcher's one client,
   resolves every host name once, refuses the connection when ANY resolved address is
   not public, and connects to the addresses it checked. There is no second DNS lookup
   that a rebinding server could answer differently; TLS still verifies the certificate
   and sends SNI for the host name, because httpcore does the TLS upgrade by name.

The backend also enforces the total deadline of the request running on its thread:
every connect, read and write is bounded by the time left (see :meth:`deadline`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore

from newsq import errors
from newsq.config.settings import AllowPrivate

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: an IPv4 address inside
# What ``is_global`` (Python 3.11) calls global, or may, that no public server has.
_NEVER_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "::/96",  # IPv4-compatible, deprecated (RFC 4291): ::a.b.c.d
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): the embedding is the site's own
        "fec0::/10",  # site-local, deprecated (RFC 3879) but routed on some networks
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


class Refused(Exception):
    """A URL or address the fetcher will not touch; ``reason`` is a contract code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class BlockedAddress(Refused):
    """A host resolved to (or is) an address that is not public."""

    def __init__(self, detail: str) -> None:
        super().__init__(errors.BLOCKED_ADDRESS, detail)


def _parse_ipv4_part(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)  # ValueError for "08", as inet_aton refuses it
    return int(part)


def numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host spelling means (inet_aton rules), else None.

    Raises ValueError when the host is all numeric parts but no valid address
    (``999.1.1.1``, ``0x1ffffffff``): a browser refuses those URLs too.
    """
    parts = host.split(".")
    if not parts or not all(_NUMERIC_PART.match(p) for p in parts) or len(parts) > 4:
        return None
    values = [_parse_ipv4_part(p) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise ValueError(f"invalid IPv4 address {host!r}")
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def is_public(ip: IPAddress) -> bool:
    """True when ``ip`` is globally routable unicast; the one test of every address.

    An IPv6 address that carries an IPv4 one is judged by it too: IPv4-mapped and
    NAT64 (64:ff9b::/96) by the IPv4 address alone, 6to4 (2002::/16) by both; Teredo
    (2001::/32) is a tunnel to a client we cannot check and never public.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public(ip.sixtofour):
            return False
        if ip.teredo is not None:
            return False
    if any(ip in net for net in _NEVER_PUBLIC):
        return False
    # is_global holds for multicast and some reserved ranges, so those are asked too
    unusable = ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
    return ip.is_global and not (unusable or ip.is_private or ip.is_link_local)


def check_address(ip: IPAddress, port: int, host: str, allow: AllowPrivate) -> None:
    """Return None when ``ip:port`` may be reached; raise :class:`BlockedAddress` if not."""
    if is_public(ip) or allow.allows(str(ip), port, host):
        return
    raise BlockedAddress(f"{host} -> {ip} is not a public address")


def prepare(url: str, allow: AllowPrivate) -> str:
    """The URL with its host normalised, ready to request.

    Raises :class:`Refused` with ``invalid_url`` (not http/https, no host, too long,
    bad port) or ``blocked_address`` (an IP-literal host that is not public).
    """
    if len(url) > MAX_URL_LENGTH:
        raise Refused(errors.INVALID_URL, f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 for c in url):
        raise Refused(errors.INVALID_URL, "URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").rstrip(".")
    except ValueError as exc:
        raise Refused(errors.INVALID_URL, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(errors.INVALID_URL, f"scheme {parts.scheme!r} is not http or https")
    if not host:
        raise Refused(errors.INVALID_URL, "URL has no host")
    port = port or (443 if scheme == "https" else 80)
    try:
        ip: IPAddress | None = numeric_ipv4(host) or ipaddress.ip_address(host)
    except ValueError:
        if numeric_ipv4_like(host):
            raise Refused(errors.INVALID_URL, f"invalid numeric host {host!r}") from None
        ip = None
    if ip is None:
        return url
    check_address(ip, port, host, allow)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def numeric_ipv4_like(host: str) -> bool:
    """True when every dot-separated part is a number (so the host must be an IPv4)."""
    return all(_NUMERIC_PART.match(p) for p in host.split("."))


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the owning request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: GuardedBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = self._backend.bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, bounded), self._backend
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore network backend: resolve once, check every address, connect to those.

    Thread-safe; each thread's current request deadline is kept thread-locally.
    """

    def __init__(self, allow: AllowPrivate, *, resolver_threads: int = 8) -> None:
        self._allow = allow
        self._sync = httpcore.SyncBackend()
        self._local = threading.local()
        # getaddrinfo cannot time out by itself; a pool lets us stop waiting for it.
        self._resolver = ThreadPoolExecutor(resolver_threads, thread_name_prefix="newsq-dns")

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Bound all network I/O on this thread to end by monotonic time ``at``."""
        self._local.deadline = at
        try:
            yield
        finally:
            self._local.deadline = None

    def bound(self, timeout: float | None, exc: type[Exception]) -> float | None:
        """``timeout`` shortened to the time left; raises ``exc`` when none is left."""
        at: float | None = getattr(self._local, "deadline", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise exc("total fetch deadline passed")
        return left if timeout is None else min(timeout, left)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to; raises httpcore.ConnectError/ConnectTimeout."""
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        future = self._resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=self.bound(None, httpcore.ConnectTimeout))
        except FutureTimeout:
            raise httpcore.ConnectTimeout(f"DNS lookup of {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"DNS lookup of {host} failed: {exc}") from None
        addresses: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise httpcore.ConnectError(f"DNS lookup of {host} found no address")
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.resolve(host, port)
        for ip in addresses:  # all of them, so a mixed answer cannot win by ordering
            check_address(ip, port, host, self._allow)
        last: Exception | None = None
        for ip in addresses:
            try:
                stream = self._sync.connect_tcp(
                    str(ip),
                    port,
                    timeout=self.bound(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                log.debug("connect to %s (%s:%s) failed: %s", host, ip, port, exc)
                last = exc
                continue
            return _DeadlineStream(stream, self)
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise BlockedAddress(f"unix socket {path} is never fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self._resolver.shutdown(wait=False, cancel_futures=True)
