"""``newsq export --warc`` writes replayable records: the head and bytes as they came.

A page fetched (processed where it was fetched, or handed off through Redis) or
backfilled from a WARC file with ``NEWSQ_KEEP_RAW=1`` is archived with its server's status line
and headers and its body's own bytes, in its own charset; before, every record was a
made-up ``200 OK`` with the HTML re-encoded as UTF-8.
"""

from __future__ import annotations

import dataclasses
import gzip
import time
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from warcio.archiveiterator import ArchiveIterator

from newsq.backfill.progress import Progress, job_id, split
from newsq.backfill.step import span_step
from newsq.config.settings import Settings
from newsq.demo.warc import Capture, write_warc
from newsq.pipeline import fetch_step, process_step
from newsq.resources import Runtime
from newsq.store.export import export_store
from tests.servers import serve_handler

TEXT = (
    "Le conseil municipal a voté jeudi soir le budget de l'année prochaine, après un débat "
    "de plus de trois heures sur la rénovation des écoles et le prix des cantines. "
)
PAGE = (
    "<!DOCTYPE html><html><head><title>Budget voté à la mairie</title></head><body>"
    "<article><h1>Budget voté à la mairie</h1>"
    + "".join(f"<p>{TEXT * 2} Paragraphe {i}.</p>" for i in range(8))
    + "</article></body></html>"
).encode("cp1252")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = gzip.compress(PAGE)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=windows-1252")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("X-Served-By", "test-origin")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _exported(rt: Runtime, path: Path) -> dict[str, Any]:
    """The response records of ``newsq export --all --warc``, by WARC-Target-URI."""
    export_store(rt.store, rt.store.iter_articles(unique_only=False), "jsonl",
                 str(path.with_suffix(".jsonl")), warc=str(path))  # fmt: skip
    with path.open("rb") as handle:
        return {
            r.rec_headers.get_header("WARC-Target-URI"): (r.http_headers, r.raw_stream.read())
            for r in ArchiveIterator(handle)
            if r.rec_type == "response"
        }


@pytest.mark.parametrize("hand_off", [False, True])
def test_a_fetched_page_is_archived_with_its_head_and_bytes(settings: Settings, tmp_path: Path,
                                                            hand_off: bool) -> None:  # fmt: skip
    """Processed where it was fetched, or handed off through Redis (the split layout,
    and a page held for its site's template: its head and bytes kept beside its text)."""
    rt = Runtime(dataclasses.replace(settings, keep_raw=True, robots=False))
    with serve_handler(_Handler) as base:
        url = f"{base}/budget"
        rt.ledger.enqueue([url])
        step = fetch_step(rt, url, hand_off=hand_off)
        for _ in range(50):  # its host's turn, should the frontier have parked it
            if step.action != "parked":
                break
            time.sleep(0.2)
            step = fetch_step(rt, url, hand_off=hand_off)
        assert step.action == "next" and (step.page is None) == hand_off, step
        done = process_step(rt, url, step.page)
        while done.action == "next":  # held for its young site's template: its turn again
            time.sleep(done.countdown)
            done = process_step(rt, url)
        assert done.state == "stored"
    records = _exported(rt, tmp_path / "fetched.warc.gz")
    rt.close()
    http, body = records[url]
    assert body == PAGE  # windows-1252 bytes, not the text re-encoded as UTF-8
    assert http.get_header("Content-Type") == "text/html; charset=windows-1252"
    assert http.get_header("X-Served-By") == "test-origin"
    # its Content-Encoding undone, and said so: the record's body is the page itself
    assert http.get_header("Content-Encoding") is None
    assert http.get_header("X-Newsq-Original-Content-Encoding") == "gzip"
    assert http.get_header("Content-Length") == str(len(PAGE))


def test_a_backfilled_page_is_archived_as_the_warc_had_it(settings: Settings,
                                                          tmp_path: Path) -> None:  # fmt: skip
    headers = (("Content-Type", "text/html; charset=windows-1252"), ("X-Served-By", "crawl"),
               ("Content-Length", str(len(PAGE))))  # fmt: skip
    source = tmp_path / "in.warc.gz"
    write_warc(source, [Capture("https://news.example/budget", 200, "OK", headers, PAGE)])
    rt = Runtime(dataclasses.replace(settings, keep_raw=True))
    size = source.stat().st_size
    spans = split(job_id(str(source), size), str(source), size, True, 1, 1)
    Progress(rt.redis, settings.key_prefix).plan(spans, size)
    span_step(rt, spans[0], lambda url: nullcontext(), lambda url, countdown: None)
    records = _exported(rt, tmp_path / "out.warc")
    rt.close()
    http, body = records["https://news.example/budget"]
    assert body == PAGE
    assert http.statusline == "200 OK"
    assert http.headers == list(headers)
    assert "voté" in body.decode("cp1252")
