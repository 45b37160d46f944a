"""URL normalisation: one spelling per page, so a page is enqueued and fetched once.

courlan does the heavy lifting (lower-cased scheme and host, default ports dropped,
query sorted, tracking parameters such as ``utm_*``, ``fbclid`` and ``gclid`` dropped);
newsq adds what it leaves: the fragment is dropped and only http(s) URLs with a host
are accepted.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

from courlan import normalize_url

from newsq.errors import INVALID_URL

MAX_URL_LENGTH = 2048


class InvalidURL(ValueError):
    """Not an http(s) URL newsq can fetch; ``reason`` is ``invalid_url``."""

    reason = INVALID_URL


def normalize(url: str) -> str:
    """The canonical spelling of ``url``; raises :class:`InvalidURL` when it has none."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL empty or longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise InvalidURL(f"not an http(s) URL: {url[:200]}")
        if not parts.hostname:
            raise InvalidURL(f"URL has no host: {url[:200]}")
        parts.port  # noqa: B018 - raises ValueError on a bad port
        normal = normalize_url(url)
    except InvalidURL:
        raise
    except ValueError as exc:
        raise InvalidURL(f"malformed URL {url[:200]}: {exc}") from None
    parts = urlsplit(normal)
    path = parts.path or "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def normalize_or_none(url: str | None) -> str | None:
    """Like :func:`normalize`, but None for a missing or invalid URL."""
    if not url:
        return None
    try:
        return normalize(url)
    except InvalidURL:
        return None


def invalid_key(raw: str) -> str:
    """The key an invalid URL's ``failed``/``invalid_url`` outcome is kept under: the URL
    as given, cut to ``MAX_URL_LENGTH`` (a store's key cannot be a megabyte long)."""
    return raw[:MAX_URL_LENGTH]


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, lower-cased: the unit of politeness."""
    return urlsplit(url).netloc.lower()


def url_id(url: str) -> str:
    """A short stable id of a normalised URL, used in Redis keys."""
    return hashlib.blake2b(url.encode(), digest_size=12).hexdigest()
