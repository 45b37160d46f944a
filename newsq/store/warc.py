"""``newsq export --warc FILE``: the kept raw pages of exported articles as WARC records.

One ``warcinfo`` record, then one ``response`` record per exported article whose page
was kept (``NEWSQ_KEEP_RAW=1`` when it was processed). A page kept with its HTTP head
and body (fetched or backfilled since migration 0007) is written as it came: the
status line and headers the server sent and the body's bytes, in their own charset, so
the record replays (a fetched body's transfer and content encodings are undone, and
its head says so, as Common Crawl's records do). A page kept before that has only its
decoded HTML: it is written re-encoded as UTF-8 under a ``200 OK`` (the record's
``newsq-Payload-Note`` says so). Records are written while the export streams, a batch
at a time, so memory stays constant. A name ending in ``.gz`` gives a gzip-per-record
WARC (``.warc.gz``).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

from newsq.errors import ConfigError
from newsq.store.database import Store

BATCH = 200
HTTP_VERSIONS = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/2.0"]


def _warc_date(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # SQLite hands back naive UTC times
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


class WarcArchive:
    """Writes response records for article rows; counts what it wrote and missed."""

    def __init__(self, handle: IO[bytes], filename: str, store: Store) -> None:
        try:
            from warcio.warcwriter import WARCWriter
        except ImportError:
            raise ConfigError("--warc needs warcio: pip install 'newsq[warc]'") from None
        self.store = store
        self.writer = WARCWriter(handle, gzip=filename.endswith(".gz"))
        self.written = 0
        self.missing = 0
        info = {"software": "newsq 0.1.0", "format": "WARC File Format 1.1",
                "description": "raw pages of articles exported by newsq"}  # fmt: skip
        self.writer.write_record(self.writer.create_warcinfo_record(filename, info))

    def archived(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass ``rows`` through, writing the page of each one on the way."""
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                self._write(batch)
                yield from batch
                batch = []
        if batch:
            self._write(batch)
            yield from batch

    def _write(self, rows: list[dict[str, Any]]) -> None:
        from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParser

        kept = self.store.pages_for([(r["url"], r["content_hash"]) for r in rows])
        for row in rows:
            page = kept.get((row["url"], row["content_hash"]))
            if page is None:
                self.missing += 1
                continue
            headers = {
                "WARC-Date": _warc_date(page["fetched_at"]),
                "newsq-URL": row["url"],
                "newsq-Story-ID": row["story_id"],
                "newsq-Content-Hash": row["content_hash"],
            }
            if page.get("http_head") and page.get("body_zlib") is not None:
                head = io.BytesIO(page["http_head"].encode("latin-1"))
                http = StatusAndHeadersParser(HTTP_VERSIONS, verify=False).parse(head)
                body = zlib.decompress(page["body_zlib"])
            else:
                body = zlib.decompress(page["html_zlib"])
                content_type = page["content_type"] or "text/html; charset=utf-8"
                http = StatusAndHeaders("200 OK", [("Content-Type", content_type),
                                                   ("Content-Length", str(len(body)))],
                                        protocol="HTTP/1.1")  # fmt: skip
                headers["newsq-Payload-Note"] = "HTML as decoded by newsq, re-encoded as UTF-8"
            uri = page["final_url"] or row["url"]
            record = self.writer.create_warc_record(
                uri, "response", payload=io.BytesIO(body), http_headers=http,
                warc_headers_dict=headers,
            )  # fmt: skip
            self.writer.write_record(record)
            self.written += 1
