"""A realistic sample news site on loopback, built from the dev corpus, with its truth.

``SampleSite.build(SiteSpec(...))`` makes, from the real pages and gold texts of
``newsq/demo/data/aeb-dev`` (seeded, no network):

1. outlets, each with its own template and boilerplate, an RSS feed and a home page;
2. original stories: the corpus page as-is, or the gold text in the outlet's template;
3. syndicated copies at other outlets, edited the way re-publishers edit
   (``newsq.demo.edits``);
4. exact copies under other URLs: tracking parameters, an AMP page, a 302 redirect;
5. broken links (404, a PDF, an image, a video page with no article, optionally a 500)
   and hard negatives (other stories on the same templates, short local briefs);
6. the truth: every URL handed out → its story (``None`` when it has none), and the
   :class:`Expected` outcome counts of a newsq run over the feeds plus ``extra_urls``.

``serve()`` puts every outlet on its own port (or its own 127.0.0.N address) with a
threaded in-memory HTTP server. ``python -m newsq.demo.site`` serves one to browse.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import Any

from newsq.demo.build import Builder, Entry, Resource
from newsq.demo.edits import ALL_EDITS
from newsq.urls import normalize

CORPUS = Path(__file__).parent / "data" / "aeb-dev"
_TOKEN = re.compile(r"@@BASE(\d+)@@")


@dataclass(frozen=True)
class SiteSpec:
    """What to generate. ``copies_per_story`` counts the outlets carrying a story."""

    stories: int = 24
    outlets: int = 4
    copies_per_story: tuple[int, int] = (1, 4)
    exact_variants: bool = True
    broken: bool = True
    negatives: int = 0
    briefs: int = 0
    member_briefs: int = 0
    """Briefs of one or two real sentences from the corpus, about one in four syndicated
    word for word to other outlets; with any, every outlet's article pages carry an
    about-us blurb and a membership appeal in the article (``Style.about_box``)."""
    use_corpus_html: bool = True
    seed: int = 7
    separate_hosts: bool | None = None
    """One 127.0.0.N address per outlet (N = 2, 3, ...) instead of one port each on .1;
    None: where the machine has those addresses (Linux does, macOS only 127.0.0.1).
    Outlets sharing one host look like one site to per-host logic (politeness, the
    learned boilerplate: four outlets' copies of one story would become "template")."""
    server_error: bool = False
    """Add a URL answering 500 (newsq retries it before it fails, which takes a while)."""
    edits: tuple[str, ...] = ALL_EDITS
    """The edits syndicated copies may get (``newsq.demo.edits.ALL_EDITS``)."""


@dataclass(frozen=True)
class Outlet:
    """One news outlet of the site; ``base_url`` is empty until the site is served."""

    name: str
    base_url: str = ""


@dataclass(frozen=True)
class Expected:
    """What a newsq run over the site's feeds and extra URLs should end with.

    Which copy of a story is stored first depends on processing order, so the counts
    are per story: every story one ``stored`` URL, its other URLs ``duplicate``.
    """

    urls_in: int
    stories: int
    stored: int
    duplicate: int
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


def expected_of(entries: list[Entry], bases: list[str]) -> Expected:
    """The outcome counts of ``entries``, counting URLs once after normalisation."""
    groups: dict[str, Entry] = {}
    for entry in entries:
        key = normalize(entry.url(bases))
        seen = groups.setdefault(key, entry)
        if (seen.story, seen.state, seen.reason) != (entry.story, entry.state, entry.reason):
            raise AssertionError(f"{key}: two outcomes for one URL")
    stories = {e.story for e in groups.values() if e.story is not None}
    articles = sum(1 for e in groups.values() if e.story is not None)
    skipped = Counter(e.reason for e in groups.values() if e.state == "skipped")
    failed = Counter(e.reason for e in groups.values() if e.state == "failed")
    return Expected(
        urls_in=len(groups),
        stories=len(stories),
        stored=len(stories),
        duplicate=articles - len(stories),
        skipped={str(k): v for k, v in sorted(skipped.items())},
        failed={str(k): v for k, v in sorted(failed.items())},
    )


class _Handler(BaseHTTPRequestHandler):
    """Answers from the outlet's in-memory routes; logs nothing."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection is closed after this
    server: _OutletServer

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        status, ctype, body, location = self.server.routes.get(path, _NOT_FOUND)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


_Route = tuple[int, str, bytes, str | None]
_NOT_FOUND: _Route = (
    404,
    "text/html; charset=utf-8",
    b"<html><h1>Page not found</h1></html>",
    None,
)


class _OutletServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.routes: dict[str, _Route] = {}

    def server_bind(self) -> None:  # HTTPServer's looks the host name up: slow, not needed
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up mid-response (a fetcher's deadline or size cap) is
        # normal here, not worth a traceback on the user's terminal
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SampleSite:
    """A generated news site: its pages, its truth, and (once served) its servers."""

    def __init__(self, spec: SiteSpec, names: list[str], entries: list[Entry],
                 routes: list[dict[str, Resource]]) -> None:  # fmt: skip
        self.spec = spec
        self.entries = entries
        self._routes = routes
        self._names = names
        self._servers: list[_OutletServer] = []
        self._threads: list[threading.Thread] = []
        self._bases: list[str] = []
        placeholder = [f"http://127.0.0.1:{10000 + i}" for i in range(len(names))]
        self.expected = expected_of(entries, placeholder)
        self.outlets = [Outlet(name) for name in names]

    @classmethod
    def build(cls, spec: SiteSpec) -> SampleSite:
        """Generate the site of ``spec`` (deterministic for one seed); raises ValueError
        when the spec asks for more stories than the corpus holds."""
        builder = Builder(spec, CORPUS)
        builder.run()
        return cls(spec, builder.names, builder.entries, builder.routes)

    # -- serving --------------------------------------------------------------------

    def serve(self) -> SampleSite:
        """Start one threaded server per outlet on loopback (idempotent)."""
        if self._servers:
            return self
        separate = self.spec.separate_hosts
        if separate is None:
            separate = loopback_aliases()
        for i in range(len(self._names)):
            host = f"127.0.0.{i + 2}" if separate else "127.0.0.1"
            self._servers.append(_OutletServer((host, 0)))
        bases = [f"http://{s.server_name}:{s.server_port}" for s in self._servers]
        for server, routes in zip(self._servers, self._routes, strict=True):
            server.routes = {path: _materialise(res, bases) for path, res in routes.items()}
            thread = threading.Thread(target=server.serve_forever, daemon=True,
                                      kwargs={"poll_interval": 0.1})  # fmt: skip
            thread.start()
            self._threads.append(thread)
        self.outlets = [Outlet(n, b) for n, b in zip(self._names, bases, strict=True)]
        self._bases = bases
        return self

    def stop(self) -> None:
        """Stop every server (idempotent)."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> SampleSite:
        return self.serve()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    # -- truth ----------------------------------------------------------------------

    def _served_bases(self) -> list[str]:
        """The outlets' base URLs; they stay known after ``stop``."""
        if not self._bases:
            raise RuntimeError("the sample site is not served: call serve() first")
        return self._bases

    @property
    def feed_urls(self) -> list[str]:
        """One RSS 2.0 feed URL per outlet."""
        return [f"{base}/feed.xml" for base in self._served_bases()]

    @property
    def extra_urls(self) -> list[str]:
        """URLs in no feed that a URL list would carry: variants, AMP, redirect, broken."""
        bases = self._served_bases()
        return [e.url(bases) for e in self.entries if not e.in_feed]

    @property
    def truth(self) -> dict[str, str | None]:
        """Every URL handed out (feeds and extras, as served) → its story, None if none."""
        bases = self._served_bases()
        return {e.url(bases): e.story for e in self.entries}

    def write_truth(self, path: str | Path) -> None:
        """One JSON line per URL: url, story, kind, outlet, expected state/reason, edits."""
        bases = self._served_bases()
        with Path(path).open("w", encoding="utf-8") as out:
            for e in self.entries:
                row = {"url": e.url(bases), "story": e.story, "kind": e.kind,
                       "outlet": self._names[e.outlet], "in_feed": e.in_feed,
                       "state": e.state, "reason": e.reason, "edits": list(e.edits)}  # fmt: skip
                out.write(json.dumps(row) + "\n")


def loopback_aliases() -> bool:
    """True when loopback addresses beyond 127.0.0.1 can be bound (False on error)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return False
    return True


def _materialise(res: Resource, bases: list[str]) -> _Route:
    def fill(text: str) -> str:
        return _TOKEN.sub(lambda m: bases[int(m.group(1))], text)

    body = res.body if isinstance(res.body, bytes) else fill(res.body).encode("utf-8")
    return (res.status, res.content_type, body, fill(res.location) if res.location else None)


def main() -> None:
    """Serve a sample site until interrupted: ``python -m newsq.demo.site [STORIES]``."""
    import sys
    import time

    stories = int(sys.argv[1]) if len(sys.argv) > 1 else SiteSpec.stories
    with SampleSite.build(SiteSpec(stories=stories)) as site:
        print("feeds:", *site.feed_urls, sep="\n  ")
        print("expected:", site.expected)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
