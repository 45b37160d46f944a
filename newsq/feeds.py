"""Feeds stage: RSS/Atom feeds and sitemaps in, article URLs out.

feedparser reads RSS 0.9x/1.0/2.0 and Atom; sitemaps (``urlset``, ``sitemapindex``,
Google News ``news:news``) are read with lxml. Parsing never raises: a body that is
neither gives an empty :class:`FeedItems` with ``error`` set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urljoin

import feedparser
from lxml import etree

log = logging.getLogger(__name__)

_SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


@dataclass(frozen=True)
class FeedItems:
    """What one feed or sitemap lists."""

    urls: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()
    """Child sitemaps of a sitemap index, to be read in turn."""
    kind: str = "feed"
    title: str | None = None
    error: str | None = field(default=None)


def _parse_sitemap(body: bytes, base_url: str) -> FeedItems | None:
    try:
        root = etree.fromstring(
            body, parser=etree.XMLParser(resolve_entities=False, no_network=True)
        )
    except etree.XMLSyntaxError:
        return None
    tag = etree.QName(root).localname
    if tag not in ("urlset", "sitemapindex"):
        return None
    locs = [
        urljoin(base_url, (el.text or "").strip())
        for el in root.iter(f"{{{_SITEMAP_NS}}}loc", "loc")
        if (el.text or "").strip()
    ]
    if tag == "sitemapindex":
        return FeedItems(sitemaps=tuple(locs), kind="sitemap")
    return FeedItems(urls=tuple(locs), kind="sitemap")


def parse(body: bytes, base_url: str) -> FeedItems:
    """The article URLs a feed or sitemap lists, in document order, without repeats."""
    head = body[:2048].lstrip().lower()
    if b"<urlset" in head or b"<sitemapindex" in head:
        sitemap = _parse_sitemap(body, base_url)
        if sitemap is not None:
            return sitemap
    parsed = feedparser.parse(body)
    links: list[str] = []
    for entry in parsed.entries:
        link = entry.get("link") or next(
            (ln.get("href") for ln in entry.get("links", []) if ln.get("href")), None
        )
        if link:
            links.append(urljoin(base_url, link))
    if not links and parsed.bozo and not parsed.entries:
        return FeedItems(error=f"not a feed or sitemap: {parsed.get('bozo_exception')}")
    return FeedItems(urls=tuple(dict.fromkeys(links)), title=parsed.feed.get("title"))
