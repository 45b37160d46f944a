"""A site's feeds and sitemaps, found from its home page.

``newsq feeds add https://site.example/`` names a site, not a feed: its robots.txt's
``Sitemap:`` lines and the home page's ``<link rel="alternate">`` feeds (RSS, Atom) are
what gets registered. Two requests, spaced by the host's rate; the fetcher's guards
(SSRF, size, timeouts) hold for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from lxml import html as lxml_html
from protego import Protego

from newsq.fetch.client import Fetcher

FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/feed+json"})
MOST = 50
"""Feeds and sitemaps taken from one site: a home page can list hundreds of category feeds."""


def is_home_page(url: str) -> bool:
    """True for a site's root (``https://site.example/``): a site to discover, not a feed."""
    parts = urlsplit(url)
    return bool(parts.netloc) and parts.path in ("", "/") and not parts.query


@dataclass
class Found:
    """What a site offers: (URL, kind) pairs in the order found, and what could not be read."""

    feeds: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, url: str, kind: str) -> None:
        if len(self.feeds) < MOST and all(url != known for known, _ in self.feeds):
            self.feeds.append((url, kind))


def discover(fetcher: Fetcher, home: str, host_rate: float) -> Found:
    """The sitemaps robots.txt names and the feeds the home page links, for ``home``."""
    parts = urlsplit(home)
    origin = f"{parts.scheme}://{parts.netloc}"
    found = Found()
    robots = fetcher.fetch(f"{origin}/robots.txt", kind="robots")
    if robots.ok and robots.status == 200 and robots.body:
        for sitemap in Protego.parse(robots.body.decode("utf-8", "replace")).sitemaps:
            found.add(urljoin(origin, sitemap.strip()), "sitemap")
    elif robots.status != 404:
        found.problems.append(f"robots.txt: {robots.reason} (HTTP {robots.status})")
    if host_rate > 0:
        time.sleep(1 / host_rate)  # the home page is the host's next request
    page = fetcher.fetch(home)
    if page.ok and page.text:
        try:
            tree = lxml_html.fromstring(page.text.encode("utf-8", "surrogatepass"))
        except (ValueError, lxml_html.etree.ParserError):
            tree = None
        links = [] if tree is None else tree.iterfind(".//link[@rel]")
        for link in links:
            rel = (link.get("rel") or "").lower().split()
            kind = (link.get("type") or "").split(";")[0].strip().lower()
            href = (link.get("href") or "").strip()
            if "alternate" in rel and kind in FEED_TYPES and href:
                found.add(urljoin(page.final_url or home, href), "feed")
    else:
        found.problems.append(f"home page: {page.reason} (HTTP {page.status})")
    return found
