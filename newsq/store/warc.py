"""``newsq export --warc FILE``: the kept raw pages of exported articles as WARC records.

One ``warcinfo`` record, then one ``response`` record per exported article whose page
was kept (``NEWSQ_KEEP_RAW=1`` when it was processed). The payload is the page's HTML
as newsq decoded it, re-encoded as UTF-8 (the header says so); the HTTP status line
is ``200 OK`` because only fetched-and-stored pages are kept. Records are written
while the export streams, a batch at a time, so memory stays constant. A name ending
in ``.gz`` gives a gzip-per-record WARC (``.warc.gz``).
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
        from warcio.statusandheaders import StatusAndHeaders

        kept = self.store.pages_for([(r["url"], r["content_hash"]) for r in rows])
        for row in rows:
            page = kept.get((row["url"], row["content_hash"]))
            if page is None:
                self.missing += 1
                continue
            body = zlib.decompress(page["html_zlib"])
            content_type = page["content_type"] or "text/html; charset=utf-8"
            http = StatusAndHeaders("200 OK", [("Content-Type", content_type),
                                               ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")  # fmt: skip
            headers = {
                "WARC-Date": _warc_date(page["fetched_at"]),
                "newsq-URL": row["url"],
                "newsq-Story-ID": row["story_id"],
                "newsq-Content-Hash": row["content_hash"],
                "newsq-Payload-Note": "HTML as decoded by newsq, re-encoded as UTF-8",
            }
            uri = page["final_url"] or row["url"]
            record = self.writer.create_warc_record(
                uri, "response", payload=io.BytesIO(body), http_headers=http,
                warc_headers_dict=headers,
            )  # fmt: skip
            self.writer.write_record(record)
            self.written += 1
