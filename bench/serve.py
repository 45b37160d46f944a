"""HTTP servers on loopback for the benches, each serving in a thread of its own."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """A request handler that logs nothing: a bench's output is its table."""

    def reply(self, code: int, body: bytes, kind: str,
              headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """``body`` as ``kind``, with its length; a 304 carries neither."""
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if code != 304:
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if code != 304:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # a client that went away mid-answer (a worker killed by a drill) is no error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def start(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server of ``handler`` on a free port of ``host``, serving until :func:`stop`."""
    server = _Server((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    """``http://HOST:PORT`` of ``server``."""
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``handler`` while the block runs: its base URL."""
    server = start(handler, host)
    try:
        yield base_url(server)
    finally:
        stop(server)
