"""Feeds stage: RSS/Atom feeds and sitemaps in, article URLs out.

feedparser reads RSS 0.9x/1.0/2.0 and Atom; sitemaps (``urlset``, ``sitemapindex``,
Google News sitemaps, whose ``<url>`` entries carry a ``news:news`` block next to
their ``<loc>``) are read with lxml, gzipped ones (``sitemap.xml.gz``) too. Only each
entry's own ``<loc>`` counts, never ``image:loc`` or ``video:loc``. Parsing never
raises: a body that is neither gives an empty :class:`FeedItems` with ``error`` set.
What a feed says of each URL (the entry's title and date; a sitemap's ``lastmod`` and
``news:publication_date``) comes with it as an :class:`Entry`.
Bodies are remote: every parser is handed their bytes (lxml) or a stream of them
(feedparser), never a name it could open, and lxml never loads entities or DTDs.
"""

from __future__ import annotations

import calendar
import io
import logging
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser
from lxml import etree

log = logging.getLogger(__name__)

_SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
_NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
_GZIP_MAGIC = b"\x1f\x8b"
MAX_GUNZIPPED = 50_000_000  # the sitemap protocol's own cap on an uncompressed file
MAX_TITLE = 500
"""Longest entry title kept (the ledger and the store keep it for every URL)."""
_YEAR_MONTH = re.compile(r"^(\d{4})(?:-(\d{2}))?$")  # W3C dates may stop at the year or month


@dataclass(frozen=True)
class Entry:
    """What a feed or sitemap says of one URL it lists."""

    title: str | None = None
    published: datetime | None = None
    """When the entry was published (a sitemap's ``news:publication_date``), UTC."""
    updated: datetime | None = None
    """When it last changed (the feed entry's ``updated``, a sitemap's ``lastmod``), UTC."""

    @property
    def dated(self) -> datetime | None:
        """The time its age is counted from: published, else updated."""
        return self.published or self.updated


@dataclass(frozen=True)
class FeedItems:
    """What one feed or sitemap lists."""

    urls: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()
    """Child sitemaps of a sitemap index, to be read in turn."""
    kind: str = "feed"
    title: str | None = None
    error: str | None = field(default=None)
    entries: Mapping[str, Entry] = field(default_factory=dict)
    """What the body says of its URLs and child sitemaps (those it says anything of)."""


def w3c_time(text: str | None) -> datetime | None:
    """A sitemap's W3C datetime (``2024-05-02``, ``2024-05-02T10:00:00Z``, ``2024-05``)
    in UTC; None when absent or not a date. A time without a zone is taken as UTC."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        match = _YEAR_MONTH.match(text)
        if not match:
            return None
        when = datetime(int(match.group(1)), int(match.group(2) or 1), 1)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _struct_time(value: Any) -> datetime | None:
    """feedparser's parsed time (a UTC ``struct_time``) as a datetime."""
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _title(text: str | None) -> str | None:
    text = " ".join((text or "").split())
    return text[:MAX_TITLE] or None


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
    entries: dict[str, Entry] = {}
    news = f"{{{_NEWS_NS}}}news"
    for ns in (f"{{{_SITEMAP_NS}}}", ""):
        for item in root.iterfind(f"{ns}{entry}"):
            loc = (item.findtext(f"{ns}loc") or "").strip()
            if not loc:
                continue
            url = urljoin(base_url, loc)
            locs[url] = None
            said = Entry(title=_title(item.findtext(f"{news}/{{{_NEWS_NS}}}title")),
                         published=w3c_time(item.findtext(f"{news}/{{{_NEWS_NS}}}publication_date")),
                         updated=w3c_time(item.findtext(f"{ns}lastmod")))  # fmt: skip
            if said != Entry():
                entries.setdefault(url, said)
    if tag == "sitemapindex":
        return FeedItems(sitemaps=tuple(locs), kind="sitemap", entries=entries)
    is_news = root.find(f"{{{_SITEMAP_NS}}}url/{news}") is not None
    return FeedItems(urls=tuple(locs), kind="sitemap", entries=entries,
                     title="Google News sitemap" if is_news else None)  # fmt: skip


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
    entries: dict[str, Entry] = {}
    for entry in parsed.entries:
        link = entry.get("link") or next(
            (ln.get("href") for ln in entry.get("links", []) if ln.get("href")), None
        )
        if link:
            url = urljoin(base_url, link)
            links.append(url)
            said = Entry(title=_title(entry.get("title")),
                         published=_struct_time(entry.get("published_parsed")),
                         updated=_struct_time(entry.get("updated_parsed")))  # fmt: skip
            if said != Entry():
                entries.setdefault(url, said)
    if not links and parsed.bozo and not parsed.entries:
        return FeedItems(error=f"not a feed or sitemap: {parsed.get('bozo_exception')}")
    return FeedItems(urls=tuple(dict.fromkeys(links)), title=parsed.feed.get("title"),
                     entries=entries)  # fmt: skip
