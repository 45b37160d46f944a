"""Feeds that poll themselves: which feeds are due, one conditional poll, the next interval.

A registered feed (RSS/Atom or sitemap, a row of the store's ``feeds`` table) is polled
when its ``next_due`` has passed. One poll:

  1. claims the feed (:meth:`Store.claim_feeds`), so two ticks or two workers never
     poll it at once; a poller that dies leaves the feed due again after a lease;
  2. asks with a conditional GET (``If-None-Match`` / ``If-Modified-Since`` from the
     stored ``etag`` / ``last_modified``); a 304 costs nothing more: no parsing, no
     enqueueing;
  3. parses the body (following a sitemap index's children) and enqueues only the URLs
     the ledger has not seen before;
  4. adapts the interval: halved when new items appeared, ×1.5 when none did (or the
     poll failed), kept within the feed's ``[min_every_s, max_every_s]``; the next poll
     is due that long after this one was due (not after it ran: a tick's lateness
     does not add up), or, when this poll was over an interval late, between half an
     interval and one and a half from now (feeds that all came late, after an outage,
     do not stay due together).

Feeds added in bulk (:func:`add_feeds`) are first due at random times within their
interval, so that thousands of them do not all come due in one tick; each keeps that
phase from then on.

Nothing here knows Celery: ``send(urls)`` hands new URLs to the fetch stage. Failures
(unreachable feed, not a feed) are results with ``error`` set, never exceptions.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from newsq import errors
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.feeds import parse as feeds
from newsq.feeds.intake import Discovery, enqueue, too_old_note
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import Politeness
from newsq.ledger import Ledger
from newsq.store.database import Store
from newsq.store.database import now as utcnow
from newsq.urls import InvalidURL, host_of, normalize, normalize_or_none

log = logging.getLogger(__name__)

GROW = 1.5
SHRINK = 0.5
POLITE_WAIT_S = 10.0
"""How long a poll waits for its host's politeness slot before it is put off."""
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)

Send = Callable[[list[str]], object]


@dataclass(frozen=True)
class FeedPoll:
    """What one poll of one feed did."""

    url: str
    status: int | None
    """HTTP status of the answer; None when there was none."""
    new: int = 0
    known: int = 0
    not_modified: bool = False
    error: str | None = None
    every_s: float = 0.0
    """The interval until the next poll."""
    too_old: int = 0
    """Entries left out for their age (``NEWSQ_MAX_AGE_DAYS``)."""


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``10m``, ``2h``, ``1d`` or a bare number; raises ConfigError."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def format_duration(seconds: float) -> str:
    """A short form of ``seconds``: ``45s``, ``10m``, ``1.5h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def next_interval(every: float, new: int, low: float, high: float) -> float:
    """Halve the interval after new items, stretch it ×1.5 after none; clamped to [low, high]."""
    return min(high, max(low, every * (SHRINK if new else GROW)))


def _aware(when: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def lease_seconds(settings: Settings) -> float:
    """How long a claimed feed stays taken: time for the feed and a few child sitemaps."""
    return settings.fetch_timeout * 5 + 60


# -- registering ---------------------------------------------------------------------


def add_feed(
    store: Store,
    url: str,
    settings: Settings,
    *,
    every: float | None = None,
    min_every: float | None = None,
    max_every: float | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Register ``url``, due at once; returns the stored row.

    A feed already registered keeps its history (added, polls, validators, kind) and
    takes the intervals given; one not given stays as it was, its adapted interval
    brought within new bounds. ``kind`` defaults to ``sitemap`` when the path says so,
    else ``feed``; the first poll corrects it from what the body turns out to be.
    Raises ConfigError for a bad URL or intervals that do not fit ``min <= every <= max``.
    """
    url = _feed_url(url)
    known = store.get_feed(url)
    values = feed_values(url, known, settings, every=every, min_every=min_every,
                         max_every=max_every, kind=kind)  # fmt: skip
    store.upsert_feed({**values, "next_due": utcnow()})
    log.info("feed %s %s: every %s", url, "registered" if known is None else "updated",
             format_duration(values["every_s"]))  # fmt: skip
    row = store.get_feed(url)
    assert row is not None
    return row


@dataclass
class BulkAdd:
    """What :func:`add_feeds` did."""

    added: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    """(line number, what is wrong with it) of each line not added."""
    spread_s: float = 0.0
    """The longest interval of those added: their first polls fall within it."""


def add_feeds(store: Store, lines: Iterable[str], settings: Settings, *,
              every: float | None = None, min_every: float | None = None,
              max_every: float | None = None, kind: str | None = None,
              rng: random.Random | None = None) -> BulkAdd:  # fmt: skip
    """Register the feed URL of each line (blank lines and ``#`` comments skipped), as
    :func:`add_feed` does, in one transaction; a bad line is an error of its own and the
    others are added. Each feed is first due at a random time within its interval."""
    rng = rng or random.Random()
    out = BulkAdd()
    wanted: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            wanted.setdefault(_feed_url(line), number)
        except ConfigError as exc:
            out.errors.append((number, str(exc)))
    known = store.feeds_at(list(wanted))
    rows = []
    start = utcnow()
    for url, number in wanted.items():
        try:
            values = feed_values(url, known.get(url), settings, every=every,
                                 min_every=min_every, max_every=max_every, kind=kind)  # fmt: skip
        except ConfigError as exc:
            out.errors.append((number, f"{url}: {exc}"))
            continue
        phase = timedelta(seconds=rng.uniform(0, values["every_s"]))
        rows.append({**values, "next_due": start + phase})
        out.spread_s = max(out.spread_s, values["every_s"])
        if url in known:
            out.updated += 1
        else:
            out.added += 1
    store.upsert_feeds(rows)
    out.errors.sort()
    log.info("%d feeds registered, %d updated; first polls within %s", out.added,
             out.updated, format_duration(out.spread_s))  # fmt: skip
    return out


def _feed_url(url: str) -> str:
    try:
        return normalize(url)
    except InvalidURL as exc:
        raise ConfigError(f"not a feed URL: {url[:200]}: {exc}") from None


def feed_values(url: str, known: Mapping[str, Any] | None, settings: Settings, *,
                every: float | None = None, min_every: float | None = None,
                max_every: float | None = None,
                kind: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The row values (kind, intervals) of feed ``url`` registered with these options,
    ``known`` being its row when it is there already; raises ConfigError."""
    if known is None:
        base = (settings.feed_every, settings.feed_min_every, settings.feed_max_every)
        kind = kind or ("sitemap" if "sitemap" in url.lower() else "feed")
    else:
        base = (_within(known["every_s"], min_every, max_every), known["min_every_s"],
                known["max_every_s"])  # fmt: skip
        kind = kind or known["kind"]
    every = every or base[0]
    low = min(every, base[1]) if min_every is None else min_every
    high = max(every, base[2]) if max_every is None else max_every
    if not low <= every <= high:
        shown = ", ".join(format_duration(x) for x in (low, every, high))
        raise ConfigError(f"intervals must satisfy min <= every <= max, got {shown}")
    return {"url": url, "kind": kind, "every_s": every, "min_every_s": low, "max_every_s": high}


def _within(every: float, low: float | None, high: float | None) -> float:
    """``every`` moved inside the bounds that are given."""
    if low is not None:
        every = max(every, low)
    return every if high is None else min(every, high)


def remove_feed(store: Store, url: str) -> bool:
    """Unregister ``url`` (normalised as ``add_feed`` does); False when it was not there."""
    return store.remove_feed(normalize_or_none(url) or url)


# -- polling -------------------------------------------------------------------------


def claim_due(store: Store, settings: Settings,
              now: datetime | None = None) -> dict[str, datetime]:  # fmt: skip
    """The due feeds this caller has claimed (others' claims are skipped), oldest due
    first, each with the time it was due (the claim's lease replaces it in the store)."""
    now = now or utcnow()
    lease = now + timedelta(seconds=lease_seconds(settings))
    return {url: _aware(due) for url, due in store.claim_feeds(now, lease).items()}


def next_due(due: datetime | None, every: float, now: datetime,
             jitter: float | None = None) -> datetime:  # fmt: skip
    """One interval after the time the feed was due, so a late tick does not stretch the
    interval; one interval from ``now`` without ``due``. When the poll came over an
    interval late: from ``now``, half an interval plus ``jitter`` (in [0, 1), random by
    default) of one, so feeds late together (an outage) are due apart again."""
    step = timedelta(seconds=every)
    if due is None:
        return now + step
    if _aware(due) + step < now:
        return now + step * (0.5 + (random.random() if jitter is None else jitter))
    return _aware(due) + step


def conditional_headers(feed: Mapping[str, Any]) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from the validators the last answer gave."""
    headers = {}
    if feed.get("etag"):
        headers["If-None-Match"] = feed["etag"]
    if feed.get("last_modified"):
        headers["If-Modified-Since"] = feed["last_modified"]
    return headers


def poll_feed(store: Store, fetcher: Fetcher, ledger: Ledger, url: str, send: Send,
              polite: Politeness | None = None, polite_wait: float = POLITE_WAIT_S,
              *, due: datetime | None = None, now: datetime | None = None,
              ) -> FeedPoll | None:  # fmt: skip
    """Poll one (claimed) feed and schedule its next poll, an interval after ``due`` (the
    time :func:`claim_due` gave; without it, after ``now``, the current time by default).

    With ``polite``, the poll takes its host's politeness slot like any fetch (shared
    with the article fetches of that host, across workers), waiting up to
    ``polite_wait`` seconds for it; when none comes the feed is due again that much
    later, with ``error`` saying so and nothing fetched.

    Returns None when the feed is no longer registered; a feed that cannot be read
    gives a FeedPoll with ``error`` set (and a longer interval), never an exception.
    Raises StoreUnavailable or a Redis error only when the store or ledger is down.
    """
    feed = store.get_feed(url)
    if feed is None:
        return None
    # 1. conditional GET, in the host's politeness slot
    host = host_of(url)
    if polite is not None and not polite.wait(host, polite_wait):
        store.update_feed(url, {"next_due": utcnow() + timedelta(seconds=polite_wait)})
        log.info("feed %s: host %s busy (politeness); due again in %s", url, host,
                 format_duration(polite_wait))  # fmt: skip
        return FeedPoll(url=url, status=None, error=f"host {host} busy (politeness)",
                        every_s=feed["every_s"])  # fmt: skip
    try:
        result = fetcher.fetch(url, kind="feed", headers=conditional_headers(feed))
    finally:
        if polite is not None:
            polite.release(host)
    new = known = too_old = 0
    error = None
    kind = feed["kind"]
    if not result.ok or result.body is None:
        error = f"{result.reason} (HTTP {result.status})" if result.status else result.reason
    elif result.status != 304:
        # 2. parse, following a sitemap index's children
        items = feeds.parse(result.body, result.final_url)
        error = items.error
        # child sitemaps in their hosts' politeness slots, within the discovery bounds
        discovery = Discovery(fetcher, polite=polite)
        urls = discovery.collect(items, seen={url})
        if discovery.stopped:
            log.warning("feed %s: %s: stopped at %s; %d URLs kept", url,
                        errors.DISCOVERY_LIMIT, discovery.stopped, len(urls))  # fmt: skip
        kind = items.kind if not error else kind
        # 3. only URLs the ledger has not seen are sent on, each with this feed as origin
        intake = enqueue(ledger, store, urls, send=send, origins=discovery.origins(url, urls))
        new, known, too_old = len(intake.new), len(intake.known), discovery.too_old
    # 4. adapt the interval; keep the old validators unless the answer brought new ones
    every = next_interval(feed["every_s"], new, feed["min_every_s"], feed["max_every_s"])
    now = now or utcnow()
    store.update_feed(url, {
        "kind": kind,
        "every_s": every,
        "next_due": next_due(due, every, now),
        "last_polled": now,
        "last_status": result.status,
        "last_new": new,
        "polls": feed["polls"] + 1,
        "etag": result.headers.get("etag", feed["etag"]) if result.ok else feed["etag"],
        "last_modified": (result.headers.get("last-modified", feed["last_modified"])
                          if result.ok else feed["last_modified"]),
    })  # fmt: skip
    poll = FeedPoll(url=url, status=result.status, new=new, known=known,
                    not_modified=result.status == 304, error=error, every_s=every,
                    too_old=too_old)  # fmt: skip
    if error:
        log.warning("feed %s not read: %s; next poll in %s", url, error, format_duration(every))
    else:
        old = f", {too_old_note(too_old, fetcher.settings)}" if too_old else ""
        log.info("feed %s polled: HTTP %s, %d new, %d known%s; next poll in %s",
                 url, result.status, new, known, old, format_duration(every))  # fmt: skip
    return poll


def due_in(feed: Mapping[str, Any], now: datetime | None = None) -> float:
    """Seconds until the feed is due (negative when overdue)."""
    return (_aware(feed["next_due"]) - (now or utcnow())).total_seconds()
