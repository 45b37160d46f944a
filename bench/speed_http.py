"""Small asyncio HTTP/1.1 servers for the speed benchmark, each run in its own process.

    python -m bench.speed_http proxy UPSTREAM_PORT PORT DELAY_MS
    python -m bench.speed_http static DOCROOT PORT

``proxy``  a keep-alive reverse proxy that waits ``DELAY_MS`` before forwarding each
           request (one upstream connection per client connection), modelling the
           time a real site takes to answer;
``static`` a keep-alive static file server (files held in memory), the fallback when
           nginx is not installed; slower than nginx and the benchmark says so.

Only what the benchmark needs: GET requests without a body; responses with a
Content-Length (nginx serves static files that way).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HEAD_END = b"\r\n\r\n"


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _proxy_conn(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, delay: float
) -> None:
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        while True:
            try:
                request = await reader.readuntil(HEAD_END)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await asyncio.sleep(delay)
            up_writer.write(request)
            head = await up_reader.readuntil(HEAD_END)
            body = await up_reader.readexactly(_content_length(head))
            writer.write(head + body)
            await writer.drain()
    finally:
        up_writer.close()
        writer.close()


def _static_pages(docroot: Path) -> dict[bytes, bytes]:
    pages = {}
    for path in docroot.rglob("*.html"):
        body = path.read_bytes()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        pages[b"/" + str(path.relative_to(docroot)).encode()] = head + body
    return pages


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def _static_conn(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pages: dict[bytes, bytes]
) -> None:
    try:
        while True:
            try:
                request = await reader.readuntil(HEAD_END)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            target = request.split(b" ", 2)[1].split(b"?")[0]
            writer.write(pages.get(target, NOT_FOUND))
            await writer.drain()
    finally:
        writer.close()


async def _serve(mode: str, args: list[str]) -> None:
    if mode == "proxy":
        upstream, port, delay = int(args[0]), int(args[1]), float(args[2]) / 1000
        server = await asyncio.start_server(
            lambda r, w: _proxy_conn(r, w, upstream, delay), "127.0.0.1", port, limit=1 << 20
        )
    else:
        pages = _static_pages(Path(args[0]))
        server = await asyncio.start_server(
            lambda r, w: _static_conn(r, w, pages), "127.0.0.1", int(args[1])
        )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2:]))
