"""Page metadata (title, author, date, language, site, canonical URL) from a parsed tree.

Sources are tried from the most to the least explicit:

1. JSON-LD objects of an article type (``NewsArticle``, ``Article``, ``BlogPosting``...)
2. meta tags (Open Graph, ``article:*``, Twitter, Dublin Core, ``name=author``...)
3. markup heuristics (``<time datetime>``, ``itemprop``, ``<h1>``, ``<title>``, ``<html lang>``)
4. when all of those give no date or no language: htmldate's search of the tree (and of
   the URL) for a date, py3langid on the page's paragraphs for the language; both offline

Every function here reads the tree without changing it and returns ``None`` for what
it cannot find; nothing raises on malformed markup or JSON (deeply nested JSON-LD is
skipped). Each field is capped at a sane length (``TITLE_MAX`` ...): a longer value is
cut at a word and ends in "…"; a longer canonical URL is not taken.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urljoin, urlsplit

from htmldate import find_date
from lxml.html import HtmlElement
from py3langid.langid import LanguageIdentifier

LOGGER = logging.getLogger(__name__)

ARTICLE_TYPES = frozenset(
    {
        "article",
        "newsarticle",
        "reportagenewsarticle",
        "analysisnewsarticle",
        "opinionnewsarticle",
        "reviewnewsarticle",
        "backgroundnewsarticle",
        "blogposting",
        "liveblogposting",
        "socialmediaposting",
        "techarticle",
        "scholarlyarticle",
        "report",
        "webpage",
    }
)
_TITLE_META = ("og:title", "twitter:title", "dc.title", "headline")
_AUTHOR_META = ("author", "article:author", "dc.creator", "sailthru.author", "parsely-author")
_DATE_META = (
    "article:published_time",
    "og:published_time",
    "datepublished",
    "pubdate",
    "publishdate",
    "publish-date",
    "dc.date.issued",
    "dc.date",
    "date",
    "sailthru.date",
    "parsely-pub-date",
    "article.published",
)
_SITE_META = ("og:site_name", "application-name", "twitter:site")
_SPACES = re.compile(r"\s+")
_TITLE_SEPARATORS = re.compile(r"\s+[|–—:·•»-]\s+")
TITLE_MAX = 500
AUTHOR_MAX = 300
SITE_MAX = 200
URL_MAX = 2048
"""Longest canonical URL taken, as the longest URL enqueued."""
_RAW_MAX = 4 * TITLE_MAX  # characters of a raw value read at all: the rest cannot be kept
_DATE_RAW_MAX = 100  # a date comes first in its value
_AUTHORS_MAX = 20
_LD_DEPTH = 32  # JSON-LD nesting followed (@graph, mainEntity, lists of them)
YEAR_MIN = 1900
"""Dates before this year are placeholders (``0001-01-01``), not publication dates."""
DATE_SEARCH_EXTENSIVE = False
"""htmldate's ``extensive_search``: its free-text pass mostly finds copyright years."""
LANGUAGE_MIN_CHARS = 50
"""Less text than this is not given a language by detection."""
LANGUAGE_MIN_CONFIDENCE = 0.5
"""py3langid's normalised probability below which no language is given."""
_LANGUAGE_SAMPLE = 1000  # characters detected: enough to be sure, bounded work
_VISIBLE_IN = ".//text()[not(ancestor::script or ancestor::style or ancestor::noscript)]"
_VISIBLE_TEXT = "//body" + _VISIBLE_IN[1:]
_DATE_IN_TEXT = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?"
)


@dataclass(frozen=True)
class Metadata:
    """What the page says about itself; any field may be ``None``."""

    title: str | None = None
    author: str | None = None
    published: str | None = None
    language: str | None = None
    site: str | None = None
    canonical_url: str | None = None
    paywalled: bool | None = None
    """JSON-LD ``isAccessibleForFree``, negated; ``None`` when the page does not say."""


def extract_metadata(tree: HtmlElement, url: str | None = None, *, guess: bool = True) -> Metadata:
    """The page's metadata; fields it cannot find are ``None`` (never raises).

    ``guess=False`` keeps to what the markup says: no date search by htmldate and no
    language detected from the text.
    """
    ld = _json_ld_article(tree)
    meta = _meta_tags(tree)
    published = _published(tree, ld, meta)
    language = _language(tree, ld, meta)
    if guess:
        published = published or guess_date(tree, url)
        language = language or guess_language(tree)
    return Metadata(
        title=capped(_title(tree, ld, meta), TITLE_MAX),
        author=capped(_author(ld, meta), AUTHOR_MAX),
        published=published,
        language=language,
        site=capped(_site(ld, meta, url), SITE_MAX),
        canonical_url=_canonical(tree, meta, url),
        paywalled=_paywalled(tree, ld),
    )


def capped(text: str | None, limit: int) -> str | None:
    """``text`` cut to at most ``limit`` characters, at a word when one ends near the
    cut, with "…" where it was cut."""
    if text is None or len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


# --- sources -----------------------------------------------------------------------


def _json_ld_objects(tree: HtmlElement) -> Iterator[dict[str, Any]]:
    for script in tree.iterfind(".//script[@type='application/ld+json']"):
        raw = (script.text or "").strip()
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except RecursionError:  # nested deeper than the interpreter's stack: not metadata
            continue
        except ValueError:
            # some sites put several objects or trailing commas in one script
            try:
                data = json.loads(re.sub(r",\s*([}\]])", r"\1", raw), strict=False)
            except (ValueError, RecursionError):
                continue
        yield from _walk(data)


def _walk(data: Any) -> Iterator[dict[str, Any]]:
    """Every object of ``data`` and of its ``@graph``, ``mainEntity`` and
    ``itemListElement``, depth first, down to ``_LD_DEPTH`` levels (no recursion)."""
    stack = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _LD_DEPTH:
            continue
        if isinstance(item, list):
            stack.extend((child, depth + 1) for child in reversed(item))
        elif isinstance(item, dict):
            yield item
            keys = ("itemListElement", "mainEntity", "@graph")  # reversed: @graph first
            stack.extend((item[key], depth + 1) for key in keys if key in item)


def _types(obj: dict[str, Any]) -> set[str]:
    kind = obj.get("@type", ())
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    return {k.lower() for k in kinds if isinstance(k, str)}


def _json_ld_article(tree: HtmlElement) -> dict[str, Any]:
    """The most article-like JSON-LD object, or ``{}``; a WebPage ranks last."""
    best: dict[str, Any] = {}
    for obj in _json_ld_objects(tree):
        kinds = _types(obj) & ARTICLE_TYPES
        if not kinds:
            continue
        if kinds != {"webpage"}:
            return obj
        best = best or obj
    return best


def _meta_tags(tree: HtmlElement) -> dict[str, str]:
    """Lower-cased ``name``/``property``/``itemprop`` -> first non-empty ``content``."""
    found: dict[str, str] = {}
    for el in tree.iterfind(".//meta"):
        content = (el.get("content") or "").strip()
        if not content:
            continue
        for attr in ("property", "name", "itemprop"):
            key = (el.get(attr) or "").strip().lower()
            if key and key not in found:
                found[key] = content
    return found


def _clean(text: Any) -> str | None:
    """``text`` with character references decoded and whitespace collapsed, or ``None``.

    JSON-LD strings and some meta tags carry HTML-escaped text ("&#8216;", "&amp;"):
    the parser does not decode them, so it is done here.
    """
    if not isinstance(text, str):
        return None
    text = _SPACES.sub(" ", html.unescape(text[:_RAW_MAX])).strip()
    return text or None


def _text_of(el: HtmlElement) -> str | None:
    return _clean(el.text_content())


# --- fields ------------------------------------------------------------------------


def _title(tree: HtmlElement, ld: dict[str, Any], meta: dict[str, str]) -> str | None:
    title = _clean(ld.get("headline")) or _clean(ld.get("name"))
    for key in _TITLE_META:
        title = title or _clean(meta.get(key))
    if title:
        return title
    h1 = tree.find(".//h1")
    if h1 is not None and (text := _text_of(h1)):
        return text
    head_title = tree.find(".//title")
    if head_title is not None and (text := _text_of(head_title)):
        # "Story headline | Site name": keep the longest part
        return max(_TITLE_SEPARATORS.split(text), key=len)
    return None


def _names(value: Any, depth: int = 0) -> list[str]:
    if isinstance(value, str):
        return [value]
    if depth > _LD_DEPTH:
        return []
    if isinstance(value, dict):
        return _names(value.get("name"), depth + 1)
    if isinstance(value, list):
        return [name for item in value[:_AUTHORS_MAX] for name in _names(item, depth + 1)]
    return []


def _author(ld: dict[str, Any], meta: dict[str, str]) -> str | None:
    names = [n for n in (_clean(x) for x in _names(ld.get("author"))) if n]
    if names:
        return ", ".join(dict.fromkeys(names))
    for key in _AUTHOR_META:
        value = _clean(meta.get(key))
        if value and not value.startswith(("http://", "https://")):
            return value
    return None


def normalise_date(raw: Any) -> str | None:
    """``raw`` as ISO 8601 (date, or datetime when it has a time), or ``None``."""
    if not isinstance(raw, str):
        return None
    match = _DATE_IN_TEXT.search(raw[:_DATE_RAW_MAX])
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    if int(year) < YEAR_MIN:
        return None
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day)).date().isoformat()
        stamp = f"{year}-{int(month):02d}-{int(day):02d}T{int(hour):02d}:{minute}:{second or '00'}"
        if zone:
            zone = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
            stamp += zone
        return datetime.fromisoformat(stamp).isoformat()
    except ValueError:
        return None


def _published(tree: HtmlElement, ld: dict[str, Any], meta: dict[str, str]) -> str | None:
    for raw in (ld.get("datePublished"), ld.get("dateCreated")):
        if date := normalise_date(raw):
            return date
    for key in _DATE_META:
        if date := normalise_date(meta.get(key)):
            return date
    for path in (".//*[@itemprop='datePublished']", ".//time[@datetime]"):
        for el in tree.iterfind(path):
            raw = el.get("datetime") or el.get("content") or el.text_content()
            if date := normalise_date(raw):
                return date
    if date := normalise_date(ld.get("dateModified")):
        return date
    return None


def _language(tree: HtmlElement, ld: dict[str, Any], meta: dict[str, str]) -> str | None:
    candidates = (
        tree.get("lang"),
        tree.get("xml:lang"),
        ld.get("inLanguage") if isinstance(ld.get("inLanguage"), str) else None,
        meta.get("og:locale"),
        meta.get("content-language"),
        meta.get("language"),
    )
    for raw in candidates:
        if raw and (code := re.match(r"\s*([A-Za-z]{2,3})(?:[-_]([A-Za-z]{2,4}))?", raw)):
            return code.group(1).lower()
    return None


def guess_date(tree: HtmlElement, url: str | None, *,
               extensive: bool = DATE_SEARCH_EXTENSIVE) -> str | None:  # fmt: skip
    """htmldate's publication date of ``tree`` (its URL first: ``url``, else the
    canonical link's), ISO 8601, or ``None``.

    The tree is handed over, never a URL alone: htmldate downloads what it is given as
    a URL. It copies the tree before pruning it, so ``tree`` stays as it is.
    """
    try:
        found = find_date(tree, extensive_search=extensive, original_date=True, url=url)
    except Exception as exc:  # a third-party parser on hostile markup: no date, not a crash
        LOGGER.debug("url=%s htmldate failed: %s", url, exc)
        return None
    return normalise_date(found)


@cache
def _read_model() -> LanguageIdentifier:
    from newsq.clean.langmodel import read_identifier

    return read_identifier()


# one reader of the model at a time: a page waits for the start-up's thread reading it
# (language_identifier) rather than read it again; a fork waits for it to finish, so
# no child inherits the lock held
_MODEL_LOCK = threading.Lock()
os.register_at_fork(before=_MODEL_LOCK.acquire, after_in_parent=_MODEL_LOCK.release,
                    after_in_child=_MODEL_LOCK.release)  # fmt: skip


def language_identifier() -> LanguageIdentifier:
    """py3langid's identifier: its model is read (about half a second) once a process,
    by the first caller; the others wait for it (a worker reads it in a thread at start,
    :mod:`newsq.workers.prestart`)."""
    with _MODEL_LOCK:
        return _read_model()


def guess_language(tree: HtmlElement) -> str | None:
    """The language py3langid finds in the page's paragraphs (its other text when they
    are too few), when it is confident; else ``None``."""
    sample = _paragraphs(tree) or _body_text(tree)
    if len(sample) < LANGUAGE_MIN_CHARS:
        return None
    code, confidence = language_identifier().classify(sample)
    return str(code) if confidence >= LANGUAGE_MIN_CONFIDENCE else None


def _paragraphs(tree: HtmlElement) -> str:
    """The page's ``<p>`` texts of a sentence or more, up to ``_LANGUAGE_SAMPLE`` characters."""
    parts: list[str] = []
    size = 0
    for p in tree.iterfind(".//p"):
        hidden = p.find(".//script") is not None or p.find(".//style") is not None
        text = "".join(p.xpath(_VISIBLE_IN)) if hidden else p.text_content()  # no script code
        text = _SPACES.sub(" ", text).strip()
        if len(text) >= 40:  # a caption or a button label says little of the language
            parts.append(text)
            size += len(text)
            if size >= _LANGUAGE_SAMPLE:
                break
    text = " ".join(parts)[:_LANGUAGE_SAMPLE]
    return text if len(text) >= LANGUAGE_MIN_CHARS else ""


def _body_text(tree: HtmlElement) -> str:
    text = " ".join(tree.xpath(_VISIBLE_TEXT)[:500])
    return _SPACES.sub(" ", text).strip()[:_LANGUAGE_SAMPLE]


def _accessible(value: Any) -> bool | None:
    """An ``isAccessibleForFree`` value as a bool (JSON or a string), or ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _free(obj: dict[str, Any]) -> bool | None:
    """What ``obj`` says of its access: False when it or one of its parts (``hasPart``,
    Google's markup of a paywalled section) is not free, True when it says it is free."""
    parts = obj.get("hasPart")
    parts = parts if isinstance(parts, list) else [parts]
    for part in parts[:_AUTHORS_MAX]:
        if isinstance(part, dict) and _accessible(part.get("isAccessibleForFree")) is False:
            return False
    return _accessible(obj.get("isAccessibleForFree"))


def _paywalled(tree: HtmlElement, ld: dict[str, Any]) -> bool | None:
    """True when the article's JSON-LD says it is not free to read, False when it says
    it is, ``None`` when it does not say (the WebPage around it may say it instead)."""
    free = _free(ld)
    if free is None and ld:
        for obj in _json_ld_objects(tree):
            if _types(obj) & ARTICLE_TYPES and (free := _free(obj)) is not None:
                break
    return None if free is None else not free


def host_of(url: str | None) -> str | None:
    """The lower-cased host of ``url`` without a leading ``www.``, or ``None``."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    return host[4:] if host.startswith("www.") else host


def _site(ld: dict[str, Any], meta: dict[str, str], url: str | None) -> str | None:
    publisher = ld.get("publisher")
    names = _names(publisher) if isinstance(publisher, dict | list) else []
    for value in (meta.get("og:site_name"), *names, meta.get("application-name")):
        if site := _clean(value):
            return site
    return host_of(url)


def _canonical(tree: HtmlElement, meta: dict[str, str], url: str | None) -> str | None:
    for link in tree.iterfind(".//link[@rel]"):
        if "canonical" in (link.get("rel") or "").lower().split():
            href = (link.get("href") or "").strip()
            if 0 < len(href) <= URL_MAX:
                return urljoin(url or "", href)
    og_url = (meta.get("og:url") or "").strip()
    if 0 < len(og_url) <= URL_MAX:
        return urljoin(url or "", og_url)
    return url
