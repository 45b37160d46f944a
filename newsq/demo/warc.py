"""WARC files of the sample site, for ``newsq backfill``'s tests and benchmark.

:func:`capture` asks a served URL once, without following redirects, and keeps the
answer as the wire gave it; :func:`write_warc` writes captures as a WARC file, gzipped
per record as CC-NEWS ships them, each response after its request, with a warcinfo
record first and, when asked, revisit records (a capture's payload digest) at the end.
"""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

WHEN = datetime(2019, 11, 18, 6, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Capture:
    """One HTTP answer as archived: the URL asked, status line, headers and body."""

    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def capture(url: str, timeout: float = 10.0) -> Capture:
    """GET ``url`` once (no redirect followed), the answer as the server sent it."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        conn.request("GET", path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return Capture(url, response.status, response.reason, tuple(response.getheaders()),
                       response.read())  # fmt: skip
    finally:
        conn.close()


def write_warc(path: Path, captures: Iterable[Capture], *,
               revisits: Mapping[str, str] | None = None, gzip: bool = True,
               requests: bool = True, when: datetime = WHEN) -> int:  # fmt: skip
    """Write ``captures`` to ``path``, each after its request record unless not
    ``requests``; ``revisits`` maps URLs to the URL of a capture they revisit (a revisit
    record each, at the end). Returns the records written."""
    date = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    digests: dict[str, str] = {}
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=gzip)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "newsq"}))
        count = 1
        for cap in captures:
            http = StatusAndHeaders(f"{cap.status} {cap.reason}", list(cap.headers),
                                    protocol="HTTP/1.1")  # fmt: skip
            parts = urlsplit(cap.url)
            request = StatusAndHeaders(f"GET {parts.path or '/'} HTTP/1.1",
                                       [("Host", parts.netloc)], is_http_request=True)  # fmt: skip
            headers = {"WARC-Date": date}
            if requests:
                asked = writer.create_warc_record(cap.url, "request", http_headers=request,
                                                  warc_headers_dict=headers)  # fmt: skip
                writer.write_record(asked)
                count += 1
            response = writer.create_warc_record(cap.url, "response",
                                                 payload=io.BytesIO(cap.body), http_headers=http,
                                                 warc_headers_dict=headers)  # fmt: skip
            writer.write_record(response)
            digests[cap.url] = response.rec_headers.get_header("WARC-Payload-Digest")
            count += 1
        for url, original in (revisits or {}).items():
            revisit = writer.create_revisit_record(url, digests[original], original, date)
            revisit.rec_headers.replace_header("WARC-Date", date)
            writer.write_record(revisit)
            count += 1
    return count
