"""Where a WARC file's bytes come from: a local path, or an http(s) URL read in byte
ranges through the guarded fetcher (:class:`~newsq.fetch.client.Fetcher`: SSRF checks on
every hop, the timeout, the size cap), a ``Range`` request at a time, each in one of its
host's politeness slots (:class:`~newsq.fetch.politeness.Politeness`: the rate and
concurrency that page fetches of that host share)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from newsq.errors import ConfigError, Retryable
from newsq.fetch.client import Fetcher
from newsq.records import FetchResult
from newsq.urls import host_of

if TYPE_CHECKING:
    from newsq.fetch.politeness import Politeness

CHUNK = 4 * 1024 * 1024
"""Bytes asked for in one Range request (at most ``NEWSQ_MAX_BYTES``)."""


class Stream(Protocol):
    """What the WARC reader reads: a file opened ``rb``, or a :class:`RangeReader`."""

    def read(self, size: int = -1, /) -> bytes: ...
    def tell(self) -> int: ...
    def close(self) -> None: ...


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class RangeReader:
    """A forward-only binary stream over ``url`` from ``offset``: each read past what
    was fetched asks for the next ``chunk`` bytes with a Range request."""

    def __init__(self, fetcher: Fetcher, url: str, offset: int, chunk: int = CHUNK,
                 politeness: Politeness | None = None) -> None:  # fmt: skip
        self.fetcher, self.url, self.chunk = fetcher, url, chunk
        self.politeness = politeness
        self.pos = offset  # of the first byte not yet returned
        self.buffer = b""
        self.eof = False

    def _fill(self) -> None:
        first = self.pos + len(self.buffer)
        asked = {"Range": f"bytes={first}-{first + self.chunk - 1}", "Accept-Encoding": "identity"}
        host = host_of(self.url)
        # a host's slot as a page fetch takes it: no longer than a fetch may take, else
        # the span is retried later (it goes on after the records it counted)
        if self.politeness is not None and not self.politeness.wait(
            host, self.fetcher.settings.fetch_timeout
        ):
            raise Retryable(f"{self.url}: no politeness slot of {host} came free")
        try:
            result = self.fetcher.fetch(self.url, kind="archive", headers=asked)
        finally:
            if self.politeness is not None:
                self.politeness.release(host)
        if result.status == 416:  # the range starts past the end: the file's end
            self.eof = True
            return
        body = ranged_body(result, first)
        self.buffer += body
        if len(body) < self.chunk:
            self.eof = True

    def read(self, size: int = -1) -> bytes:
        while not self.eof and (size < 0 or len(self.buffer) < size):
            self._fill()
        size = len(self.buffer) if size < 0 else size
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        self.pos += len(out)
        return out

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.buffer = b""


def ranged_body(result: FetchResult, first: int) -> bytes:
    """The body of a Range request's answer; Retryable when the fetch may succeed later,
    ConfigError when it failed or the server ignored the range (a 200 not from 0)."""
    if result.retryable:
        raise Retryable(f"{result.url}: {result.reason} (HTTP {result.status})")
    if not result.ok:
        raise ConfigError(f"{result.url}: {result.reason} (HTTP {result.status})")
    if result.status != 206 and first > 0:
        raise ConfigError(f"{result.url}: the server does not answer Range requests")
    return result.body or b""


def open_at(source: str, offset: int, fetcher: Fetcher | None,
            politeness: Politeness | None = None) -> Stream:  # fmt: skip
    """``source``'s bytes from ``offset`` on (a URL needs ``fetcher``; with
    ``politeness``, each of its requests takes one of its host's slots)."""
    if is_url(source):
        if fetcher is None:
            raise ValueError("a URL source needs a fetcher")
        return RangeReader(fetcher, source, offset, politeness=politeness)
    handle = open(source, "rb")  # noqa: SIM115  (the caller closes it)
    handle.seek(offset)
    return handle


def describe(source: str, fetcher: Fetcher | None) -> tuple[int, bytes]:
    """(size in bytes, first bytes) of ``source``; ConfigError naming what is wrong."""
    if not is_url(source):
        try:
            with open(source, "rb") as handle:
                return os.fstat(handle.fileno()).st_size, handle.read(4)
        except OSError as exc:
            raise ConfigError(f"{source}: {exc.strerror or exc}") from None
    if fetcher is None:
        raise ValueError("a URL source needs a fetcher")
    asked = {"Range": "bytes=0-3", "Accept-Encoding": "identity"}
    result = fetcher.fetch(source, kind="archive", headers=asked)
    head = ranged_body(result, 0)
    total = (result.headers.get("content-range") or "").rpartition("/")[2]
    if result.status == 206 and total.isascii() and total.isdigit():
        return int(total), head[:4]
    raise ConfigError(f"{source}: the server does not answer Range requests with a size")
