"""Feeds stage: RSS/Atom feeds and sitemaps in, article URLs out.

feedparser reads RSS 0.9x/1.0/2.0 and Atom; sitemaps (``urlset``, ``sitemapindex``,
Google News sitemaps, whose ``<url>`` entries carry a ``news:news`` block next to
their ``<loc>``) are read with lxml, gzipped ones (``sitemap.xml.gz``) too. Only each
entry's own ``<loc>`` counts, never ``image:loc`` or ``video:loc``. Parsing never
raises: a body that is neither gives an empty :class:`FeedItems` with ``error`` set.
Bodies are remote: every parser is handed their bytes (lxml) or a stream of them
(feedparser), never a name it could open, and lxml never loads entities or DTDs.
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass, field
from urllib.parse import urljoin

import feedparser
from lxml import etree

log = logging.getLogger(__name__)

_SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
_NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
_GZIP_MAGIC = b"\x1f\x8b"
MAX_GUNZIPPED = 50_000_000  # the sitemap protocol's own cap on an uncompressed file


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
    entry = "sitemap" if tag == "sitemapindex" else "url"
    locs: dict[str, None] = {}
    for ns in (f"{{{_SITEMAP_NS}}}", ""):
        for el in root.iterfind(f"{ns}{entry}/{ns}loc"):
            loc = (el.text or "").strip()
            if loc:
                locs[urljoin(base_url, loc)] = None
    if tag == "sitemapindex":
        return FeedItems(sitemaps=tuple(locs), kind="sitemap")
    news = root.find(f"{{{_SITEMAP_NS}}}url/{{{_NEWS_NS}}}news") is not None
    return FeedItems(
        urls=tuple(locs), kind="sitemap", title="Google News sitemap" if news else None
    )


def _gunzip(body: bytes) -> bytes | None:
    """The inflated body of a gzipped sitemap, or None when corrupt or over the cap."""
    decomp = zlib.decompressobj(wbits=31)
    try:
        out = decomp.decompress(body, MAX_GUNZIPPED)
    except zlib.error:
        return None
    return None if decomp.unconsumed_tail else out


def parse(body: bytes, base_url: str) -> FeedItems:
    """The article URLs a feed or sitemap lists, in document order, without repeats.

    Returns empty items with ``error`` set when the body is neither a feed nor a sitemap.
    """
    if body.startswith(_GZIP_MAGIC):
        inflated = _gunzip(body)
        if inflated is None:
            return FeedItems(error="corrupt or oversized gzip body")
        body = inflated
    head = body[:2048].lstrip().lower()
    if b"<urlset" in head or b"<sitemapindex" in head:
        sitemap = _parse_sitemap(body, base_url)
        if sitemap is not None:
            return sitemap
    # a stream, never bytes or str: feedparser opens a body that looks like a path or URL
    parsed = feedparser.parse(io.BytesIO(body))
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
