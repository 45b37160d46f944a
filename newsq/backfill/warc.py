"""WARC records in, pages out: the records of one byte range, each an HTML page for the
clean stage or a reason code.

A range ``[start, end)`` owns the records that *begin* in it, so ranges cut anywhere
share out a file's records exactly once: a range's reader finds the first record at or
after ``start`` (:func:`record_start`), then reads records, past ``end`` if the last one
runs on, until one begins at or after ``end``. warcio reads them (pure Python: it reads
any stream, a Range-fetched one too, and tells each record's offset; see
``bench/README.md`` for how it compares with fastwarc).

A response record is decoded exactly as the fetch stage decodes a body
(:mod:`newsq.fetch.decoding`): its Content-Encoding undone under ``NEWSQ_MAX_BYTES``, its
charset from the HTTP headers, then ``<meta>``, then detection.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import ChunkedDataReader

from newsq import errors
from newsq.fetch.client import PAGE_TYPES
from newsq.fetch.decoding import BodyError, BoundedDecoder, decode_html, looks_like_html, media_type
from newsq.pipeline import Page

if TYPE_CHECKING:
    from newsq.backfill.source import Stream

GZIP_MEMBER = b"\x1f\x8b\x08"
WARC_START = b"WARC/1."
_WINDOW = 1 << 20  # bytes scanned at a time for the first record of a range
_HEAD = 64 * 1024  # compressed bytes tried from a candidate gzip member


@dataclass(frozen=True)
class Skip:
    """A record that is no page: the reason code its URL ends with, and a detail."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Record:
    """One WARC record of a range: where it starts, its type and target, and what it
    holds for the pipeline (a page, a skip, or None for a record that is no capture:
    warcinfo, request, metadata)."""

    offset: int
    kind: str
    url: str | None
    outcome: Page | Skip | None


def is_gzip(head: bytes) -> bool:
    """True when a WARC file starting with ``head`` is gzipped (per record, as CC-NEWS)."""
    return head.startswith(GZIP_MEMBER[:2])


def _member_is_record(data: bytes) -> bool:
    """True when the gzip member at the start of ``data`` unpacks to a WARC record."""
    try:
        head = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(data, len(WARC_START))
    except zlib.error:
        return False
    return head == WARC_START


def _plain_is_record(data: bytes, at: int) -> bool:
    """True when ``data[at:]`` starts a WARC record after the end of another (its
    block's two CRLFs) or at the file's start."""
    return data.startswith(WARC_START, at) and (at == 0 or data[max(0, at - 4) : at] == b"\r\n\r\n")


def scan_from(start: int, gzipped: bool) -> int:
    """Where to read from to find the first record at or after ``start``: a plain
    record is told by its predecessor's CRLFs, four bytes before it."""
    return start if gzipped else max(0, start - 4)


def record_start(stream: Stream, start: int, gzipped: bool) -> int | None:
    """The offset of the first record beginning at or after ``start`` of ``stream``
    (read from ``scan_from(start, gzipped)`` on); None when none does."""
    if start == 0:
        return 0
    base = scan_from(start, gzipped)  # the file offset of data[0]
    marker = GZIP_MEMBER if gzipped else WARC_START
    data = stream.read(_WINDOW)
    at = data.find(marker, start - base)
    while True:
        while at != -1:
            if gzipped and len(data) - at < _HEAD and (more := stream.read(_HEAD)):
                data += more
                continue
            if _member_is_record(data[at : at + _HEAD]) if gzipped else _plain_is_record(data, at):
                return base + at
            at = data.find(marker, at + 1)
        more = stream.read(_WINDOW)
        if not more:
            return None
        keep = min(len(data), len(marker) + 4)  # a marker cut by the window's edge
        base += len(data) - keep
        data = data[-keep:] + more
        at = data.find(marker, 0)


def read_records(stream: Stream, end: int, max_bytes: int) -> Iterator[Record]:
    """The records of ``stream`` (positioned at a record's start, its ``tell()`` the
    file offset) that begin before ``end``."""
    records = ArchiveIterator(stream, ensure_http_headers=False)
    for record in records:
        offset = records.offset  # the record's start (get_record_offset reads it through)
        if offset >= end:
            return
        kind = record.rec_type
        url = record.rec_headers.get_header("WARC-Target-URI")
        if kind == "response" and record.http_headers is not None:
            yield Record(offset, kind, url, _response(record, max_bytes))
        elif kind == "revisit":
            profile = record.rec_headers.get_header("WARC-Profile") or ""
            detail = "revisit record" + (f" ({profile.rsplit('/', 1)[-1]})" if profile else "")
            yield Record(offset, kind, url, Skip(errors.REVISIT, detail))
        else:
            yield Record(offset, kind, url, None)


def _fetched_at(record: Any) -> datetime:
    value = record.rec_headers.get_header("WARC-Date") or ""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _response(record: Any, max_bytes: int) -> Page | Skip:
    """The page of a response record, with its HTTP head and body as archived (for
    ``NEWSQ_KEEP_RAW``), or why it is none (the fetch stage's checks and reason codes:
    a status other than 200, a type that is not HTML, a body too large or not text)."""
    http = record.http_headers
    status = http.get_statuscode() or ""
    if status != "200":
        return Skip(errors.HTTP_ERROR, f"HTTP {status or 'status missing'}")
    content_type = http.get_header("Content-Type")
    mtype, charset = media_type(content_type)
    if mtype is not None and mtype not in PAGE_TYPES:
        return Skip(errors.BAD_CONTENT_TYPE, f"Content-Type {content_type}")
    body = record.raw_stream.read(max_bytes + 1)
    try:
        decoded = _undo_encodings(http, body, max_bytes)
        if mtype is None and not looks_like_html(decoded):
            return Skip(errors.BAD_CONTENT_TYPE, "Content-Type missing, body not HTML")
        text, _ = decode_html(decoded, charset)
    except BodyError as exc:
        return Skip(exc.reason, str(exc))
    url = record.rec_headers.get_header("WARC-Target-URI") or ""
    return Page(url, _fetched_at(record), text, (http.to_str() + "\r\n", body))


def _undo_encodings(http: Any, body: bytes, max_bytes: int) -> bytes:
    """``body`` without its transfer and content encodings, at most ``max_bytes``."""
    if len(body) > max_bytes:
        raise BodyError(errors.TOO_LARGE, f"body exceeds {max_bytes} bytes")
    if "chunked" in (http.get_header("Transfer-Encoding") or "").lower():
        try:
            body = ChunkedDataReader(io.BytesIO(body)).read(max_bytes + 1)
        except (ValueError, zlib.error) as exc:
            raise BodyError(errors.DECODE_ERROR, f"bad chunked body: {exc}") from None
    decoder = BoundedDecoder(http.get_header("Content-Encoding"), max_bytes)
    return b"".join([*decoder.feed(body), decoder.flush()])
