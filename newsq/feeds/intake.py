"""Input: feeds, URL files and URLs become enqueued fetch tasks, each URL once.

Every URL is normalised; the ledger's enqueue script decides atomically which are new,
so concurrent enqueuers never enqueue one URL twice. A URL that cannot be normalised
is not dropped: it is recorded as ``failed`` / ``invalid_url``.

A feed entry or sitemap URL dated over ``NEWSQ_MAX_AGE_DAYS`` ago is not enqueued, only
counted (an archive sitemap would flood the queue). A URL first found in a feed keeps
its :class:`Origin` (the feed, the entry's title and date) in the ledger and the store.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING

from newsq import errors
from newsq.config.settings import Settings
from newsq.feeds import parse as feeds
from newsq.fetch.client import Fetcher
from newsq.fetch.netguard import Refused
from newsq.ledger import Ledger
from newsq.records import FAILED, FetchResult
from newsq.store.database import Store
from newsq.urls import InvalidURL, host_of, invalid_key, normalize

if TYPE_CHECKING:
    from newsq.fetch.politeness import Politeness

log = logging.getLogger(__name__)
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
    too_old: int = 0
    """Feed entries and sitemap URLs left out for their age (``NEWSQ_MAX_AGE_DAYS``)."""


@dataclass(frozen=True)
class Origin:
    """Where a URL was first found: the feed or sitemap (as given or registered), and
    what its entry said."""

    feed: str
    title: str | None = None
    published: datetime | None = None

    def fields(self) -> dict[str, str]:
        """The ledger's fields of it (``feed``, ``feed_title``, ``feed_published``)."""
        out = {"feed": self.feed, "feed_title": self.title or ""}
        if self.published is not None:
            out["feed_published"] = self.published.astimezone(UTC).isoformat()
        return {k: v for k, v in out.items() if v}

    def row(self) -> dict[str, object]:
        """The store's columns of it."""
        return {"feed": self.feed, "feed_title": self.title, "feed_published": self.published}


@dataclass
class Gathered:
    """All the URLs of one input, in order, and what the feeds said of them."""

    urls: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    """Feeds that could not be read or were cut short, and why."""
    origins: dict[str, Origin] = field(default_factory=dict)
    too_old: int = 0


def too_old_note(count: int, settings: Settings) -> str:
    """What a count of entries left out for their age says: ``skipped 3 older than 30 days``."""
    return f"skipped {count} older than {settings.max_age_days:g} days (NEWSQ_MAX_AGE_DAYS)"


def max_age_cutoff(settings: Settings, now: datetime | None = None) -> datetime | None:
    """The oldest date a feed entry may carry to be enqueued; None without a limit."""
    if not settings.max_age_days:
        return None
    return (now or datetime.now(UTC)) - timedelta(days=settings.max_age_days)


URL_LINE_MAX = 65536
"""Bytes in a line of a URL file: a longer one is no URL list (``/dev/zero`` has no end)."""


def read_url_file(path: str) -> list[str]:
    """Non-blank, non-comment lines of a file (``-`` is stdin); raises ConfigError."""
    import sys
    from contextlib import nullcontext

    urls = []
    try:
        with nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb") as file:
            while line := file.readline(URL_LINE_MAX + 1):
                if len(line) > URL_LINE_MAX and not line.endswith(b"\n"):
                    raise errors.ConfigError(f"URL file {path}: a line over {URL_LINE_MAX} "
                                             "bytes, not a list of URLs")  # fmt: skip
                text = line.decode("utf-8")
                if text.strip() and not text.startswith("#"):
                    urls.append(text.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"cannot read URL file {path}: {exc}") from None
    return urls


@dataclass(frozen=True)
class Bounds:
    """What the discovery of one feed or sitemap may cost (``NEWSQ_DISCOVERY_*``)."""

    urls: int
    depth: int
    requests: int
    seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(settings.discovery_max_urls, settings.discovery_max_depth,
                   settings.discovery_max_requests, settings.discovery_timeout)  # fmt: skip


def fetch_error(result: FetchResult) -> str:
    """What a failed fetch of a feed says: its reason, and the status or the way out."""
    if result.reason == errors.BLOCKED_ADDRESS:  # often a local feed: say what opens it
        return f"{result.reason} (NEWSQ_ALLOW_PRIVATE allows it)"
    return f"{result.reason} (HTTP {result.status})" if result.status else str(result.reason)


class Discovery:
    """The discovery of one input: a feed or sitemap, and a sitemap index's children.

    Every request, each redirect hop included, takes its host's politeness slot (shared
    with the article fetches, across workers) when ``polite`` is given. The whole of it
    stops at its :class:`Bounds` (URLs, index depth, requests, time; ``deadline``, a
    ``time.monotonic()`` time, can end it sooner): ``stopped`` then says which, and
    what was found until then is kept. URLs, and child sitemaps, dated before ``cutoff``
    (default: ``NEWSQ_MAX_AGE_DAYS`` ago) are left out and counted in ``too_old``;
    ``entries`` keeps what the bodies said of the URLs kept.
    """

    def __init__(self, fetcher: Fetcher, *, polite: Politeness | None = None,
                 deadline: float | None = None, bounds: Bounds | None = None,
                 cutoff: datetime | None = None) -> None:  # fmt: skip
        self.fetcher = fetcher
        self.polite = polite
        self.bounds = bounds or Bounds.from_settings(fetcher.settings)
        self.deadline = time.monotonic() + self.bounds.seconds
        self._time_bound = f"{self.bounds.seconds:g}s (NEWSQ_DISCOVERY_TIMEOUT)"
        if deadline is not None and deadline < self.deadline:
            self.deadline, self._time_bound = deadline, "the run's --timeout"
        self.requests = 0
        self.stopped: str | None = None
        self._held: list[str] = []
        self.cutoff = cutoff or max_age_cutoff(fetcher.settings)
        self.too_old = 0
        self.old_sitemaps = 0
        self.entries: dict[str, feeds.Entry] = {}

    def expand(self, url: str) -> tuple[list[str], str | None]:
        """The article URLs ``url`` lists, its child sitemaps' included, or an error."""
        items, error = self.read(url)
        if items is None:
            return [], error
        return self.collect(items, seen={url}), None

    def read(self, url: str, headers: Mapping[str, str] | None = None,
             ) -> tuple[feeds.FeedItems | None, str | None]:  # fmt: skip
        """One feed or sitemap parsed, or None and why it could not be read."""
        result = self.fetch(url, headers)
        if result.reason == errors.DISCOVERY_LIMIT:
            return None, f"{result.reason}: stopped at {self.stopped}"
        if not result.ok or result.body is None:
            return None, fetch_error(result)
        items = feeds.parse(result.body, result.final_url or url)
        return (None, items.error) if items.error else (items, None)

    def collect(self, items: feeds.FeedItems, seen: set[str] | None = None) -> list[str]:
        """``items``' URLs and their child sitemaps', breadth first, within the bounds."""
        urls: dict[str, None] = {}
        self._add(urls, items)
        seen = set(seen or ()) | set(items.sitemaps)
        queue = deque((child, 1) for child in self._fresh(items))
        while queue and self.stopped is None:
            child, depth = queue.popleft()
            if depth > self.bounds.depth:
                self._stop(f"sitemap indexes nested over {self.bounds.depth} levels "
                           "(NEWSQ_DISCOVERY_MAX_DEPTH)")  # fmt: skip
                break
            found, error = self.read(child)
            if found is None:
                log.info("child sitemap %s not read: %s", child, error)
                continue
            self._add(urls, found)
            for grandchild in self._fresh(found):
                if grandchild not in seen:  # an index listing itself or its parent
                    seen.add(grandchild)
                    queue.append((grandchild, depth + 1))
        return list(urls)

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> FetchResult:
        """``url`` fetched as a feed in its hosts' politeness slots, or a result whose
        reason is ``discovery_limit`` when a bound stops it first."""
        try:
            self.take_slot(url)
            return self.fetcher.fetch(
                url, kind="feed", headers=headers, deadline=self.deadline, before_hop=self.take_slot
            )
        except Refused as exc:
            return FetchResult(url=url, final_url=url, ok=False, status=None, reason=exc.reason,
                               content_type=None, bytes=0, elapsed_ms=0, redirects=0)  # fmt: skip
        finally:
            while self._held:
                assert self.polite is not None
                self.polite.release(self._held.pop())

    def take_slot(self, url: str) -> None:
        """Count one request and wait for its host's slot; raises Refused past a bound."""
        if self.requests >= self.bounds.requests:
            self._refuse(f"{self.requests} requests (NEWSQ_DISCOVERY_MAX_REQUESTS)")
        left = self.deadline - time.monotonic()
        if left <= 0:
            self._refuse(self._time_bound)
        self.requests += 1
        if self.polite is not None:
            host = host_of(url)
            if not self.polite.wait(host, left):
                self._refuse(f"{self._time_bound}, waiting for host {host} (politeness)")
            self._held.append(host)

    def _add(self, urls: dict[str, None], items: feeds.FeedItems) -> None:
        for url in items.urls:
            entry = items.entries.get(url)
            if self._old(entry):
                self.too_old += 1
                continue
            if len(urls) >= self.bounds.urls:
                self._stop(f"{self.bounds.urls} URLs (NEWSQ_DISCOVERY_MAX_URLS)")
                return
            urls[url] = None
            if entry is not None:
                self.entries.setdefault(url, entry)

    def _fresh(self, items: feeds.FeedItems) -> Iterable[str]:
        """The child sitemaps worth reading: a ``lastmod`` before the cutoff says that
        nothing in it changed since, so nothing in it is new enough."""
        for child in items.sitemaps:
            if self._old(items.entries.get(child)):
                self.old_sitemaps += 1
                log.info("child sitemap %s not read: last modified %s, before %s "
                         "(NEWSQ_MAX_AGE_DAYS)", child, items.entries[child].dated,
                         self.cutoff)  # fmt: skip
            else:
                yield child

    def _old(self, entry: feeds.Entry | None) -> bool:
        dated = entry.dated if entry is not None else None
        return self.cutoff is not None and dated is not None and dated < self.cutoff

    def origins(self, feed: str, urls: Iterable[str]) -> dict[str, Origin]:
        """Each of ``urls`` (found by this discovery) with ``feed`` as its origin."""
        out = {}
        for url in urls:
            entry = self.entries.get(url)
            title, published = (entry.title, entry.dated) if entry else (None, None)
            out[url] = Origin(feed, title, published)
        return out

    def _stop(self, bound: str) -> None:
        if self.stopped is None:
            self.stopped = bound

    def _refuse(self, bound: str) -> None:
        self._stop(bound)
        raise Refused(errors.DISCOVERY_LIMIT, f"stopped at {bound}")


def expand_feed(fetcher: Fetcher, url: str, polite: Politeness | None = None,
                ) -> tuple[list[str], str | None]:  # fmt: skip
    """The article URLs a feed or sitemap lists (following sitemap indexes), or an error."""
    return Discovery(fetcher, polite=polite).expand(url)


INTAKE_CHUNK = 2000
"""URLs normalised and enqueued at a time, the new ones sent before the next are read:
a big URL file's first fetches start at once, not once the whole file is in."""


def enqueue(
    ledger: Ledger,
    store: Store,
    raw_urls: Iterable[str],
    *,
    send: Callable[[list[str]], object],
    origins: Mapping[str, Origin] | None = None,
    chunk: int = INTAKE_CHUNK,
) -> Intake:
    """Normalise, deduplicate and enqueue, ``chunk`` URLs at a time; ``send(urls)``
    queues the fetches of each chunk's new URLs once the ledger holds them.

    A new URL found in a feed (``origins``, keyed by the URL as found) gets its origin
    in the ledger and in the store's ``urls`` table before it is sent.
    """
    intake = Intake()
    seen: set[str] = set()
    raws = iter(raw_urls)
    while part := list(islice(raws, max(1, chunk))):
        normal: list[str] = []
        came_from: dict[str, Origin] = {}
        for raw in part:
            try:
                url = normalize(raw)
            except InvalidURL as exc:
                intake.invalid.append(raw)  # the caller reports it (the CLI: one line)
                log.info("%s: invalid URL: %s", raw[:200], exc)
                continue
            if origins and raw in origins:
                came_from.setdefault(url, origins[raw])
            if url not in seen:
                seen.add(url)
                normal.append(url)
        new: list[str] = []
        for url, is_new in zip(normal, ledger.enqueue(normal, recorded=store.recorded),
                               strict=True):  # fmt: skip
            (new if is_new else intake.known).append(url)
        found = {url: came_from[url] for url in new if url in came_from}
        if found:
            store.record_origins({url: origin.row() for url, origin in found.items()})
            ledger.note_many({url: origin.fields() for url, origin in found.items()})
        intake.new += new
        if new:
            send(new)
    for raw in intake.invalid:
        key = invalid_key(raw)  # what newsq status of it looks up
        if ledger.enqueue([key], recorded=store.recorded)[0]:
            store.record_outcome({"url": key, "state": FAILED, "reason": errors.INVALID_URL})
            ledger.move(key, FAILED, reason=errors.INVALID_URL)
    return intake


def batches(urls: Sequence[str], most: int) -> list[list[str]]:
    """``urls`` in order, in messages of up to ``most`` (``NEWSQ_FETCH_BATCH``): one URL
    each for fewer than ``2 * BATCH_SPREAD`` URLs, then one more per ``BATCH_SPREAD``."""
    size = max(1, min(most, len(urls) // BATCH_SPREAD))
    return [list(urls[i : i + size]) for i in range(0, len(urls), size)]


def gather(fetcher: Fetcher, feed_urls: Sequence[str], files: Sequence[str],
           urls: Sequence[str], *, polite: Politeness | None = None,
           deadline: float | None = None) -> Gathered:  # fmt: skip
    """All input URLs in order, the feeds that could not be read or were cut short (each
    feed's :class:`Discovery` in ``polite``'s slots, all of them by ``deadline``), the
    origins of the feeds' URLs and how many were left out for their age."""
    out = Gathered(urls=list(urls))
    for path in files:
        out.urls.extend(read_url_file(path))
    for feed in feed_urls:
        discovery = Discovery(fetcher, polite=polite, deadline=deadline)
        found, error = discovery.expand(feed)
        if error is None and discovery.stopped is not None:
            error = (f"{errors.DISCOVERY_LIMIT}: stopped at {discovery.stopped}; "
                     f"{len(found)} URLs kept")  # fmt: skip
        if error:
            out.problems.append((feed, error))  # returned: the caller reports it
            log.info("%s: feed not read in full: %s", feed, error)
        out.urls.extend(found)
        out.too_old += discovery.too_old
        for url, origin in discovery.origins(feed, found).items():
            out.origins.setdefault(url, origin)
    return out
