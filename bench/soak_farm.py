"""The soak benchmark's site farm: outlets whose feeds gain articles as time passes.

Each outlet is a loopback HTTP server (an address of its own when loopback aliases can be
bound) in one of the sample site's templates (``newsq.demo.pages``): article pages, an
RSS feed of the articles published within a window, ``robots.txt``; outlet 0 also a
sitemap of those and of old archive entries. Feeds and sitemap answer ``ETag`` and
``Last-Modified`` and 304 to a conditional request that matches. The farm counts every
request: per article URL, and polls and 304s per feed and simulated day.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import ThreadingHTTPServer

from bench import serve
from newsq.demo.edits import Copy, syndicate
from newsq.demo.pages import SECTIONS, PageInfo, Style, article_html, make_styles, rss_xml
from newsq.demo.site import loopback_aliases
from tests.faults.site import _vocabulary


@dataclass(frozen=True)
class Item:
    """One article the farm publishes: where, when (s after the start), which story."""

    outlet: int
    path: str
    at: float
    story: int
    kind: str  # original, exact, edited


@dataclass
class Outlet:
    style: Style
    base: str = ""
    items: list[Item] = field(default_factory=list)


def schedule(outlets: int, seconds: float, rate: float, copies: float,
             rng: random.Random) -> list[Item]:  # fmt: skip
    """Originals at ``rate`` a second (Poisson), outlet k taking a share proportional to
    1 / (k + 1) (busy outlets and quiet ones); a share ``copies`` of them republished by
    another outlet 2-8 s later."""
    items: list[Item] = []
    at, story = 0.0, 0
    weights = [1 / (k + 1) for k in range(outlets)]
    while True:
        at += rng.expovariate(rate)
        if at >= seconds:
            break
        outlet = rng.choices(range(outlets), weights)[0]
        items.append(Item(outlet, f"/news/{story}.html", at, story, "original"))
        if outlets > 1 and rng.random() < copies:
            other = (outlet + rng.randrange(1, outlets)) % outlets
            kind = "exact" if rng.random() < 0.5 else "edited"
            later = at + rng.uniform(2, 8)
            if later < seconds:
                items.append(Item(other, f"/copy/{story}.html", later, story, kind))
        story += 1
    return sorted(items, key=lambda i: i.at)


class Farm:
    """The outlets' pages, feeds and sitemap, served on loopback; counts every request."""

    def __init__(self, count: int, items: list[Item], feed_s: float, old: int,
                 old_s: tuple[float, float], seed: int = 1) -> None:  # fmt: skip
        self.outlets = [Outlet(style) for style in make_styles(count)]
        for item in items:
            self.outlets[item.outlet].items.append(item)
        self.items = items
        self.feed_s = feed_s
        self.old = [(f"/archive/{k}.html", random.Random(k).uniform(*old_s)) for k in range(old)]
        self.vocab = _vocabulary()
        self.seed = seed
        self.started: float | None = None
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # article URL -> GETs
        self.polls: Counter[tuple[str, int]] = Counter()  # (feed URL, day) -> polls
        self.not_modified: Counter[tuple[str, int]] = Counter()
        self.day_s = 1.0
        self.latency = (0.0, 0.0)  # seconds before an article answers (bench.surge)
        self.hits: dict[int, list[float]] = {}  # outlet -> times of its page requests
        self._pages: dict[str, bytes] = {}
        self._servers: list[ThreadingHTTPServer] = []

    # -- content --------------------------------------------------------------------

    def story(self, n: int) -> Copy:
        rng = random.Random(self.seed * 1_000_003 + n)
        paragraphs = []
        for _ in range(rng.randint(5, 8)):
            sentences = [" ".join(rng.sample(self.vocab, rng.randint(10, 18))).capitalize() + "."
                         for _ in range(rng.randint(3, 5))]  # fmt: skip
            paragraphs.append(" ".join(sentences))
        headline = " ".join(rng.sample(self.vocab, 7)).capitalize()
        return Copy(headline, tuple(paragraphs))

    def url(self, item: Item) -> str:
        return self.outlets[item.outlet].base + item.path

    def published(self, item: Item) -> float:
        assert self.started is not None
        return self.started + item.at

    def _listed(self, outlet: Outlet, now: float) -> list[Item]:
        if self.started is None:
            return []
        age = now - self.started
        return [i for i in outlet.items if i.at <= age < i.at + self.feed_s]

    def page(self, outlet: int, path: str) -> bytes | None:
        with self.lock:
            cached = self._pages.get(f"{outlet}{path}")
        if cached is not None:
            return cached
        item = next((i for i in self.outlets[outlet].items if i.path == path), None)
        if item is None:
            if outlet != 0 or not path.startswith("/archive/"):
                return None
            n = int(path.rsplit("/", 1)[1].split(".")[0])
            item = Item(0, path, 0.0, 10_000_000 + n, "original")
        text = self.story(item.story)
        if item.kind == "edited":
            text = syndicate(text, random.Random(item.story))
        style = self.outlets[outlet].style
        info = PageInfo(url=self.url(item), headline=text.headline, paragraphs=text.paragraphs,
                        author=f"Reporter {item.story % 37}",
                        published=datetime.fromtimestamp(self.published(item), UTC),
                        section=SECTIONS[item.story % len(SECTIONS)])  # fmt: skip
        body = article_html(style, info).replace(style.base, self.outlets[outlet].base).encode()
        with self.lock:
            self._pages[f"{outlet}{path}"] = body
        return body

    def feed(self, outlet: int, now: float) -> tuple[bytes, str, float]:
        """The feed's body, its ETag and when it last changed."""
        o = self.outlets[outlet]
        listed = self._listed(o, now)
        entries = [
            (
                self.story(i.story).headline,
                self.url(i),
                datetime.fromtimestamp(self.published(i), UTC),
                "",
            )
            for i in reversed(listed)
        ]
        body = rss_xml(o.style, entries).replace(o.style.base, o.base).encode()
        return body, _etag(body), max((self.published(i) for i in listed), default=0.0)

    def sitemap(self, now: float) -> tuple[bytes, str, float]:
        listed = self._listed(self.outlets[0], now)
        rows = [(self.url(i), self.published(i)) for i in listed]
        rows += [(self.outlets[0].base + path, now - ago) for path, ago in self.old]
        entries = "".join(f"<url><loc>{u}</loc><lastmod>{_iso(t)}</lastmod></url>"
                          for u, t in rows)  # fmt: skip
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns='
            f'"http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'
        ).encode()
        # the archive's lastmod moves with now: the ETag is of the listed articles only
        tag = _etag("".join(u for u, _ in rows[: len(listed)]).encode())
        return body, tag, max((self.published(i) for i in listed), default=0.0)

    def day_of(self, now: float) -> int:
        return -1 if self.started is None else int((now - self.started) // self.day_s)

    # -- serving --------------------------------------------------------------------

    @contextmanager
    def serve(self) -> Iterator[Farm]:
        aliases = loopback_aliases()
        for n, outlet in enumerate(self.outlets):
            host = f"127.0.0.{n + 2}" if aliases else "127.0.0.1"
            server = serve.start(_handler(self, n), host)
            outlet.base = serve.base_url(server)
            self._servers.append(server)
        try:
            yield self
        finally:
            for server in self._servers:
                serve.stop(server)

    def feed_urls(self) -> list[str]:
        feeds = [o.base + "/feed.xml" for o in self.outlets]
        return [*feeds, self.outlets[0].base + "/sitemap.xml"]


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest()[:16] + '"'


def _handler(farm: Farm, outlet: int) -> type[serve.Handler]:
    class Handler(serve.Handler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            now = time.time()
            if path not in ("/feed.xml", "/sitemap.xml"):  # what politeness paces
                with farm.lock:
                    farm.hits.setdefault(outlet, []).append(now)
            if path in ("/feed.xml", "/sitemap.xml"):
                self._listing(path, now)
            elif path == "/robots.txt":
                self.reply(200, b"User-agent: *\nAllow: /\n", "text/plain")
            else:
                if farm.latency[1] > 0:
                    time.sleep(random.uniform(*farm.latency))
                body = farm.page(outlet, path)
                if body is not None:
                    with farm.lock:
                        farm.requests[farm.outlets[outlet].base + path] += 1
                self.reply(200 if body else 404, body or b"not here", "text/html; charset=utf-8")

        def _listing(self, path: str, now: float) -> None:
            feed = farm.outlets[outlet].base + path
            sitemap = path == "/sitemap.xml"
            body, tag, changed = farm.sitemap(now) if sitemap else farm.feed(outlet, now)
            day = farm.day_of(now)
            fresh = _not_modified(self.headers.get("If-None-Match"),
                                  self.headers.get("If-Modified-Since"), tag, changed)  # fmt: skip
            with farm.lock:
                farm.polls[feed, day] += 1
                farm.not_modified[feed, day] += fresh
            headers = {"ETag": tag}
            if changed:
                headers["Last-Modified"] = format_datetime(datetime.fromtimestamp(changed, UTC),
                                                           usegmt=True)  # fmt: skip
            kind = "application/xml" if sitemap else "application/rss+xml"
            self.reply(304 if fresh else 200, b"" if fresh else body, kind, headers)

    return Handler


def _not_modified(match: str | None, since: str | None, tag: str, changed: float) -> bool:
    """RFC 9110: If-None-Match decides when given; else If-Modified-Since (to the second)."""
    if match is not None:
        return tag in [t.strip() for t in match.split(",")]
    if since is None or not changed:
        return False
    try:
        return int(changed) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False
