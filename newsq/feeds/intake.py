"""Input: feeds, URL files and URLs become enqueued fetch tasks, each URL once.

Every URL is normalised; the ledger's enqueue script decides atomically which are new,
so concurrent enqueuers never enqueue one URL twice. A URL that cannot be normalised
is not dropped: it is recorded as ``failed`` / ``invalid_url``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsq import errors
from newsq.feeds import parse as feeds
from newsq.fetch.client import Fetcher
from newsq.ledger import Ledger
from newsq.records import FAILED
from newsq.store.database import Store
from newsq.urls import InvalidURL, normalize

log = logging.getLogger(__name__)
MAX_SITEMAP_DEPTH = 3
BATCH_SPREAD = 64
"""URLs per message slot before URLs share messages: a small input stays one URL per
message, so every worker thread can take one (at 200 ms a page, parallel fetches are
what counts); a surge shares them and saves Celery's per-message work."""


@dataclass
class Intake:
    """What one enqueue did."""

    new: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    feed_errors: list[tuple[str, str]] = field(default_factory=list)


def read_url_file(path: str) -> list[str]:
    """Non-blank, non-comment lines of a file (``-`` is stdin); raises ConfigError."""
    import sys

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"cannot read URL file {path}: {exc}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def expand_feed(fetcher: Fetcher, url: str, depth: int = 0) -> tuple[list[str], str | None]:
    """The article URLs a feed or sitemap lists (following sitemap indexes), or an error."""
    result = fetcher.fetch(url, kind="feed")
    if result.reason == errors.BLOCKED_ADDRESS:  # often a local feed: say what opens it
        return [], f"{result.reason} (NEWSQ_ALLOW_PRIVATE allows it)"
    if not result.ok or result.body is None:
        return [], f"{result.reason} (HTTP {result.status})" if result.status else result.reason
    items = feeds.parse(result.body, result.final_url)
    if items.error:
        return [], items.error
    urls = list(items.urls)
    if depth < MAX_SITEMAP_DEPTH:
        for child in items.sitemaps:
            more, _ = expand_feed(fetcher, child, depth + 1)
            urls.extend(more)
    return urls, None


def enqueue(
    ledger: Ledger,
    store: Store,
    raw_urls: Iterable[str],
    *,
    send: Callable[[str], object],
) -> Intake:
    """Normalise, deduplicate and enqueue; ``send(url)`` queues one fetch task."""
    intake = Intake()
    normal: list[str] = []
    for raw in raw_urls:
        try:
            normal.append(normalize(raw))
        except InvalidURL as exc:
            intake.invalid.append(raw)  # the caller reports it (the CLI: one line)
            log.info("%s: invalid URL: %s", raw[:200], exc)
    normal = list(dict.fromkeys(normal))
    for url, new in zip(normal, ledger.enqueue(normal), strict=True):
        (intake.new if new else intake.known).append(url)
    for raw in intake.invalid:
        key = raw[:2048]
        if ledger.enqueue([key])[0]:
            store.record_outcome({"url": key, "state": FAILED, "reason": errors.INVALID_URL})
            ledger.move(key, FAILED, reason=errors.INVALID_URL)
    for url in intake.new:
        send(url)
    return intake


def batches(urls: Sequence[str], most: int) -> list[list[str]]:
    """``urls`` in order, in messages of up to ``most`` (``NEWSQ_FETCH_BATCH``): one URL
    each for fewer than ``2 * BATCH_SPREAD`` URLs, then one more per ``BATCH_SPREAD``."""
    size = max(1, min(most, len(urls) // BATCH_SPREAD))
    return [list(urls[i : i + size]) for i in range(0, len(urls), size)]


def gather(fetcher: Fetcher, feed_urls: Sequence[str], files: Sequence[str],
           urls: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:  # fmt: skip
    """All input URLs in order, and the feeds that could not be read."""
    out: list[str] = list(urls)
    for path in files:
        out.extend(read_url_file(path))
    problems = []
    for feed in feed_urls:
        found, error = expand_feed(fetcher, feed)
        if error:
            problems.append((feed, error))  # returned: the caller reports it
            log.info("%s: feed not read: %s", feed, error)
        out.extend(found)
    return out, problems
