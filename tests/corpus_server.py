"""Serve the dev corpus pages on loopback, for tests and benchmarks."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources


def corpus() -> dict[str, tuple[bytes, str]]:
    """page id → (UTF-8 HTML, gold text) for the 121 dev pages."""
    root = resources.files("newsq.demo") / "data" / "aeb-dev"
    truth = json.loads((root / "ground-truth.json").read_text())
    return {
        page_id: (
            gzip.decompress((root / "html" / f"{page_id}.html.gz").read_bytes()),
            entry["articleBody"],
        )
        for page_id, entry in truth.items()
    }


@contextmanager
def serve_pages(pages: dict[str, bytes], delay: float = 0.0) -> Iterator[str]:
    """Serve ``pages`` (path → HTML) on 127.0.0.1, each answered after ``delay``
    seconds (a site's latency); yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(delay)
            body = pages.get(self.path.split("?")[0])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client hanging up mid-response (a deadline, a cap) is not news here

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
