"""A local news site with latency for the fault-injection suite.

Every story is a distinct synthetic article (sentences drawn, seeded, from the words
of the corpus's gold texts, so dedup keeps them apart); some stories are also served,
byte for byte, under a second URL (``/copy/N``), and a few URLs answer 404. Each
request waits 50–200 ms. ``hang`` makes chosen paths stall; ``on_request`` lets a
test act while a chosen page is being fetched (kill the fetching process, say): it is
called with the path and the client's port, which names the fetching process.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.corpus_server import corpus

TEMPLATE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title} | Fault Gazette</title></head><body>
<nav><a href="/">Home</a> <a href="/world">World</a> <a href="/sport">Sport</a></nav>
<main><article><h1>{title}</h1><p class="byline">By Staff Reporter</p>
{paragraphs}
</article></main>
<footer><p>Fault Gazette, all rights reserved.</p></footer></body></html>"""


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for _, gold in corpus().values():
        words.update(w for w in re.findall(r"[A-Za-z]{3,12}", gold))
    return sorted(words)


def article_html(n: int, vocab: list[str]) -> bytes:
    """A distinct article for story ``n``: six paragraphs of seeded random sentences."""
    rng = random.Random(n)
    paragraphs = []
    for _ in range(6):
        sentences = []
        for _ in range(4):
            words = rng.sample(vocab, 14)
            sentences.append(" ".join(words).capitalize() + ".")
        paragraphs.append(f"<p>{' '.join(sentences)}</p>")
    title = f"Story {n}: {' '.join(rng.sample(vocab, 5)).title()}"
    return TEMPLATE.format(title=title, paragraphs="\n".join(paragraphs)).encode()


@dataclass
class Site:
    """What the site serves and what a run over it must end with."""

    stories: int = 220
    copies: int = 20
    missing: int = 5
    pages: dict[str, bytes] = field(default_factory=dict)
    story_of: dict[str, int] = field(default_factory=dict)
    hang: dict[str, float] = field(default_factory=dict)
    """path → seconds to stall before answering."""
    hang_once: bool = True
    """Stall a path on its first request only."""
    on_request: Callable[[str, int], None] | None = None
    """Called with (path, client port) before a request is answered."""
    requests: Counter[str] = field(default_factory=Counter)
    base: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def build(self) -> Site:
        vocab = _vocabulary()
        for n in range(self.stories):
            self.pages[f"/story/{n}"] = article_html(n, vocab)
            self.story_of[f"/story/{n}"] = n
        for n in range(self.copies):
            self.pages[f"/copy/{n}"] = self.pages[f"/story/{n}"]
            self.story_of[f"/copy/{n}"] = n
        return self

    @property
    def paths(self) -> list[str]:
        return [*self.pages, *(f"/gone/{n}" for n in range(self.missing))]

    @property
    def urls(self) -> list[str]:
        return [self.base + p for p in self.paths]

    def expected_failed(self) -> set[str]:
        return {f"{self.base}/gone/{n}" for n in range(self.missing)}


@contextmanager
def serve(site: Site, *, seed: int = 1) -> Iterator[Site]:
    """Serve ``site`` on 127.0.0.1 with 50–200 ms latency per request."""
    rng = random.Random(seed)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            with site.lock:
                site.requests[path] += 1
                first = site.requests[path] == 1
                delay = rng.uniform(0.05, 0.2)
            if site.on_request is not None:
                site.on_request(path, self.client_address[1])
            if path in site.hang and (first or not site.hang_once):
                delay = site.hang[path]
            time.sleep(delay)
            body = site.pages.get(path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            with suppress(OSError):  # the fetching process was killed mid-request
                self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
