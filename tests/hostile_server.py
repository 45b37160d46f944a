"""A threaded HTTP server on 127.0.0.1 that misbehaves on purpose, one path per case.

It counts the TCP connections it accepts and records when each request arrived, with
its headers, and how many were in flight at most, so tests can assert that a blocked
URL never reached it and that a host's request rate, concurrency and headers were
respected. Run ``python -m tests.hostile_server`` to keep one up for manual checks.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE = b"<!doctype html><html><head><title>ok</title></head><body><p>Hello.</p></body></html>"
BOMB_BYTES = 1 << 30  # what the gzip bomb inflates to: 1 GiB of zeros
SLOW_SECONDS = 0.2


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small writes must not wait 40 ms for a delayed ACK
    server: HostileServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.record(path, {k.lower(): v for k, v in self.headers.items()})
        route = ROUTES.get(path)
        if route is None:
            for prefix, handler in PREFIX_ROUTES.items():
                if path.startswith(prefix):
                    route = handler
                    break
        try:
            (route or _not_found)(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    # helpers ---------------------------------------------------------------------
    def send(self, status: int, body: bytes, ctype: str | None, **headers: str) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def stopped(self, seconds: float) -> bool:
        return self.server.stop_event.wait(seconds)


def _ok(h: _Handler) -> None:
    h.send(200, PAGE, "text/html; charset=utf-8", ETag='"v1"')


def _conditional(h: _Handler) -> None:
    if h.headers.get("If-None-Match") == '"v1"':
        h.send_response(304)
        h.send_header("ETag", '"v1"')
        h.end_headers()
        return
    _ok(h)


def _silent(h: _Handler) -> None:
    h.stopped(3600)
    h.close_connection = True


def _drip(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.flush()
    while not h.stopped(1.0):
        h.wfile.write(b"x")
        h.wfile.flush()


def _drip_headers(h: _Handler) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Slow: " + b"a" * 1000:
        if h.stopped(1.0):
            return
        h.wfile.write(bytes([byte]))
        h.wfile.flush()


def _huge_length(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", str(10**12))
    h.end_headers()
    block = b"<p>" + b"x" * 65533
    while not h.server.stop_event.is_set():
        h.wfile.write(block)


def _endless(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    block = b"<p>" + b"x" * 65533
    while not h.server.stop_event.is_set():
        h.chunk(block)


def _gzip_bomb(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Encoding", "gzip")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    for _ in range(BOMB_BYTES // len(zeros)):
        if h.server.stop_event.is_set():
            return
        data = compressor.compress(zeros)
        if data:
            h.chunk(data)
    h.chunk(compressor.flush())
    h.wfile.write(b"0\r\n\r\n")


def _gzip_page(h: _Handler) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    body = compressor.compress(PAGE) + compressor.flush()
    h.send(200, body, "text/html; charset=utf-8", Content_Encoding="gzip")


def _reset(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.write(b"<html>" + b"x" * 1000)
    h.wfile.flush()
    time.sleep(0.2)
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True


def _wrong_charset(h: _Handler) -> None:
    body = "<html><body><p>Un café à Paris, déjà vu.</p></body></html>".encode("cp1252")
    h.send(200, body, "text/html; charset=utf-8")


def _unknown_charset(h: _Handler) -> None:
    body = "<html><body><p>Grüße aus Köln</p></body></html>".encode()
    h.send(200, body, "text/html; charset=x-no-such-charset")


def _meta_charset(h: _Handler) -> None:
    body = '<html><head><meta charset="windows-1251"></head><body>Привет</body></html>'
    h.send(200, body.encode("cp1251"), "text/html")


def _binary(h: _Handler) -> None:
    h.send(200, bytes(range(0, 32)) * 200, "text/html")


def _no_type(h: _Handler) -> None:
    h.send(200, PAGE, None)


def _pdf(h: _Handler) -> None:
    h.send(200, b"%PDF-1.4 not really", "application/pdf")


def _feed(h: _Handler) -> None:
    h.send(200, b"<?xml version='1.0'?><rss><channel></channel></rss>", "application/rss+xml")


def _body_naming(body: bytes, ctype: str) -> Callable[[_Handler], None]:
    """A feed whose whole body names a local resource (a path, a file: URL)."""
    return lambda h: h.send(200, body, ctype)


def _body_is(h: _Handler) -> None:
    """A feed whose body is the query's ``text``, as given: a path, a file: URL..."""
    h.send(200, parse_qs(urlsplit(h.path).query)["text"][0].encode(), "application/rss+xml")


_SITEMAP_NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def _sitemap_tree(h: _Handler) -> None:
    """``/sitemap-tree/<fan>/<levels>/<id>.xml``: an index of ``fan`` children, ``levels``
    deep, whose leaves each list ``fan`` pages: a fan-out that never repeats a URL."""
    _, _, fan, levels, name = urlsplit(h.path).path.split("/", 4)
    node = name.removesuffix(".xml")
    ids = [f"{node}-{i}" for i in range(int(fan))]
    if int(levels) > 0:
        locs = [f"/sitemap-tree/{fan}/{int(levels) - 1}/{i}.xml" for i in ids]
        entry, root = "sitemap", "sitemapindex"
    else:
        locs, entry, root = [f"/page/{i}" for i in ids], "url", "urlset"
    items = "".join(f"<{entry}><loc>{h.server.url(loc)}</loc></{entry}>" for loc in locs)
    h.send(200, f"<{root} {_SITEMAP_NS}>{items}</{root}>".encode(), "application/xml")


def _gzip_sitemap(ctype: str, gzipped: bool = True) -> Callable[[_Handler], None]:
    """A ``sitemap.xml.gz`` served as ``ctype`` (not as a Content-Encoding)."""

    def handler(h: _Handler) -> None:
        xml = f"<urlset {_SITEMAP_NS}><url><loc>{h.server.url('/page/gz')}</loc></url></urlset>"
        body = xml.encode()
        if gzipped:
            compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            body = compressor.compress(body) + compressor.flush()
        h.send(200, body, ctype)

    return handler


def _status(code: int, **headers: str) -> Callable[[_Handler], None]:
    def handler(h: _Handler) -> None:
        h.send(code, b"<html>status</html>", "text/html", **headers)

    return handler


def _not_found(h: _Handler) -> None:
    h.send(404, b"<html>not found</html>", "text/html")


def _redirect(h: _Handler, location: str, status: int = 302) -> None:
    h.send_response(status)
    h.send_header("Location", location)
    h.send_header("Content-Length", "0")
    h.end_headers()


def _robots(h: _Handler) -> None:
    robots = h.server.robots
    if isinstance(robots, int):
        h.send(robots, b"<html>no robots here</html>", "text/html")
    else:
        h.send(200, robots.encode(), "text/plain")


def _chain(h: _Handler) -> None:
    left = int(urlsplit(h.path).path.rsplit("/", 1)[1])
    if left <= 0:
        _ok(h)
    else:
        _redirect(h, f"/chain/{left - 1}", 301)


def _redirect_to(h: _Handler) -> None:
    _redirect(h, parse_qs(urlsplit(h.path).query)["url"][0])


def _raw(h: _Handler) -> None:
    """``/raw/<status>/<hex>``: that status and, unchecked, the header bytes ``hex``
    spells (the standard library's send_header would refuse most of them)."""
    _, _, status, hexed = urlsplit(h.path).path.split("/", 3)
    head = b"HTTP/1.1 %s Hostile\r\n%s" % (status.encode(), bytes.fromhex(hexed))
    h.wfile.write(head + b"Content-Length: %d\r\n\r\n%s" % (len(PAGE), PAGE))


def raw_path(status: int, *headers: bytes) -> str:
    """The ``/raw/`` path answering ``status`` with ``headers`` (one line each, no CRLF)."""
    return f"/raw/{status}/" + b"".join(line + b"\r\n" for line in headers).hex()


def _slow(h: _Handler) -> None:
    """A page answered after ``SLOW_SECONDS``, counting the requests in flight meanwhile."""
    with h.server.in_flight():
        h.stopped(SLOW_SECONDS)
    _ok(h)


def _cookie(h: _Handler) -> None:
    """A page that sets a new 1 kB cookie each time and shows the Cookie header it got."""
    sent = h.headers.get("Cookie") or ""
    h.server.cookie_headers.append(sent)
    body = b"<html><body><p>Hello.</p><p>cookies: %d</p></body></html>" % len(sent)
    name = f"c{len(h.server.cookie_headers)}"
    h.send(200, body, "text/html", Set_Cookie=f"{name}={'v' * 1000}; Path=/")


ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/ok": _ok,
    "/conditional": _conditional,
    "/silent": _silent,
    "/drip": _drip,
    "/drip-headers": _drip_headers,
    "/huge-length": _huge_length,
    "/endless": _endless,
    "/gzip-bomb": _gzip_bomb,
    "/gzip-page": _gzip_page,
    "/reset": _reset,
    "/wrong-charset": _wrong_charset,
    "/unknown-charset": _unknown_charset,
    "/meta-charset": _meta_charset,
    "/binary": _binary,
    "/no-type": _no_type,
    "/pdf": _pdf,
    "/feed": _feed,
    "/feed-names-zero": _body_naming(b"/dev/zero", "application/xml"),
    "/body-is": _body_is,
    "/sitemap.xml.gz": _gzip_sitemap("application/x-gzip"),
    "/sitemap-gzip.xml.gz": _gzip_sitemap("application/gzip"),
    "/sitemap-octets.xml.gz": _gzip_sitemap("application/octet-stream"),
    "/sitemap-not-gzip.xml.gz": _gzip_sitemap("application/x-gzip", gzipped=False),
    "/404": _not_found,
    "/503": _status(503, Retry_After="7"),
    "/429": _status(429, Retry_After="Wed, 21 Oct 2099 07:28:00 GMT"),
    "/loop-a": lambda h: _redirect(h, "/loop-b"),
    "/loop-b": lambda h: _redirect(h, "/loop-a"),
    "/redirect-to": _redirect_to,
    "/robots.txt": _robots,
    "/cookie": _cookie,
}
PREFIX_ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/chain/": _chain,
    "/page/": _ok,
    "/slow/": _slow,
    "/sitemap-tree/": _sitemap_tree,
    "/raw/": _raw,
}


class HostileServer(ThreadingHTTPServer):
    """The server; use as a context manager. ``url(path)`` builds URLs on it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, robots: str | int = "User-agent: *\nAllow: /\n") -> None:
        """``robots`` is the robots.txt text, or an HTTP status to answer it with."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop_event = threading.Event()
        self.robots = robots
        self.connections = 0
        self.requests: list[tuple[float, str]] = []
        self.headers: list[tuple[str, dict[str, str]]] = []  # path, lower-cased headers
        self.most_in_flight = 0  # of /slow/ requests
        self._in_flight = 0
        self.cookie_headers: list[str] = []  # the Cookie header of each /cookie request
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._lock:
            self.connections += 1
        return conn, addr

    def record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((time.time(), path))
            self.headers.append((path, headers))

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts one request in flight while the block runs."""
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    with HostileServer() as server:
        print(f"hostile server at {server.url('/')}; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
