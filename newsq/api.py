"""newsq from Python: enqueue URLs and feeds, read a URL's status, wait for URLs, clean a
page, read the store's events.

The CLI's ``enqueue``, ``status`` and ``extract`` commands call these same functions:
URLs are normalised and enqueued through the ledger, so each is fetched once whether
it came from here, the CLI or a feed poll. ``settings`` default to the ``NEWSQ_*``
environment. Each call opens its connections and closes them before it returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.records import TERMINAL

if TYPE_CHECKING:
    from newsq.feeds.intake import Intake
    from newsq.ledger import Ledger
    from newsq.records import Article, Drop

# the ledger keeps every field as text; these are numbers, and these times (epoch s)
_INT_FIELDS = ("attempts", "deliveries")
_FLOAT_FIELDS = ("similarity",)
_TIME_FIELDS = ("t_enq", "t_start", "t_upd", "t_done")


def enqueue(urls: Iterable[str] = (), *, feeds: Iterable[str] = (),
            url_files: Iterable[str] = (), settings: Settings | None = None,
            timeout: float | None = None) -> Intake:  # fmt: skip
    """Enqueue article URLs, the items of RSS/Atom feeds or sitemaps, and URL files
    (one URL a line), as ``newsq enqueue`` does; reading the feeds stops after
    ``timeout`` seconds (each feed has its ``NEWSQ_DISCOVERY_*`` bounds too).

    Returns the :class:`~newsq.feeds.intake.Intake`: ``new`` (normalised, sent to the
    fetch queue), ``known`` (enqueued before, not sent again), ``invalid`` (recorded as
    ``failed``/``invalid_url``), ``feed_errors`` (feeds that could not be read) and
    ``too_old`` (feed entries dated over ``NEWSQ_MAX_AGE_DAYS`` ago, not enqueued).
    The URLs go in the bulk lane, behind feed polls' news, when a URL file was given or
    there are over ``FRESH_MOST`` (``newsq.feeds.send``).
    """
    url_files = list(url_files)
    from newsq.config.celery import make_app
    from newsq.feeds.intake import INTAKE_CHUNK, gather
    from newsq.feeds.intake import enqueue as enqueue_urls
    from newsq.feeds.send import LaneSender
    from newsq.fetch.client import Fetcher
    from newsq.fetch.politeness import Politeness
    from newsq.recovery import intake_mark
    from newsq.store.database import Store
    from newsq.workers.early import resume_gc

    settings = settings or Settings.from_env()
    with connect_ledger(settings, "newsq.enqueue()") as ledger, ExitStack() as stack:
        store = Store.from_url(settings.database_url)
        stack.callback(store.close)
        fetcher = Fetcher(settings)
        stack.callback(fetcher.close)
        app = make_app(settings)
        stack.callback(app.close)
        deadline = None if timeout is None else time.monotonic() + timeout
        polite = Politeness(ledger.redis, settings)
        resume_gc()  # if the CLI held collection off through its start: feeds make garbage
        found = gather(fetcher, list(feeds), url_files, _listed(urls),
                       polite=polite, deadline=deadline)  # fmt: skip
        # a URL file, or a backlog of over FRESH_MOST URLs, waits behind fresh news
        send = LaneSender(app, settings.fetch_batch, bulk=bool(url_files))
        with intake_mark(ledger.redis, settings.key_prefix):  # ledger first, then sends
            intake = enqueue_urls(ledger, store, found.urls, send=send, origins=found.origins,
                                  chunk=INTAKE_CHUNK)  # fmt: skip
            send.close()
    intake.feed_errors = found.problems
    intake.too_old = found.too_old
    return intake


def status(url: str, *, settings: Settings | None = None) -> dict[str, Any] | None:
    """What became of ``url`` (normalised first): ``state``, ``reason``, ``story_id``,
    ``duplicate_of``, ``similarity``, the ledger's counts and times (ISO 8601, UTC) and
    ``live`` (whether the ledger still holds it); None when it was never enqueued.

    The store answers for a URL whose ledger entry expired, and, without a broker, for
    every terminal outcome. A store that is not there is not made.
    """
    from newsq.store.database import Store, missing_store
    from newsq.urls import invalid_key, normalize_or_none

    settings = settings or Settings.from_env()
    url = normalize_or_none(url) or invalid_key(url)
    record = None
    if missing_store(settings.database_url) is None:
        store = Store.from_url(settings.database_url, create=False)
        try:
            record = store.url_record(url)
        finally:
            store.close()
    live = None
    if settings.broker_url:
        with connect_ledger(settings, "newsq.status()") as ledger:
            live = ledger.get(url)
    if live is None and record is None:
        return None
    out: dict[str, Any] = {"url": url, "state": None, "reason": None, "story_id": None,
                           "duplicate_of": None, "similarity": None}  # fmt: skip
    # a URL sent again (retry) is live in the ledger; its stored outcome is stale
    fresh = live is not None and live.get("state") not in TERMINAL
    for source in (live or {},) if fresh else (record or {}, live or {}):
        out.update({k: v for k, v in _typed(source).items() if v not in (None, "")})
    out["live"] = live is not None
    return out


def wait(urls: Iterable[str], *, timeout: float | None = None, settings: Settings | None = None,
         every: float = 0.5) -> dict[str, str | None]:  # fmt: skip
    """Wait until each of ``urls`` is in a terminal state (stored, duplicate, skipped,
    failed), or ``timeout`` seconds passed; returns each URL's state, keyed as given.

    After a timeout the URLs not done show the state they are in (None: not in the
    ledger, e.g. never enqueued).
    """
    from newsq.urls import invalid_key, normalize_or_none

    settings = settings or Settings.from_env()
    given = _listed(urls)
    normal = {url: normalize_or_none(url) or invalid_key(url) for url in given}
    keys = list(dict.fromkeys(normal.values()))
    with connect_ledger(settings, "newsq.wait()") as ledger:
        wait_for(ledger, keys, timeout, every=every)
        states = dict(zip(keys, ledger.states(keys), strict=True))
    return {url: states[normal[url]] for url in given}


def events(since: int = 0, *, follow: bool = False, every: float = 1.0,
           settings: Settings | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The store's events after event ``since`` in id order, as ``newsq events`` prints
    them: ``id``, ``kind`` (``article``: its exported record; ``copy``: a new copy of a
    known story), then the record. With ``follow``, new events as they are stored,
    polled every ``every`` seconds, until the caller stops reading. Keep the last
    ``id`` read and pass it as ``since`` to resume: nothing is missed or repeated.
    A store that is not there is not made, unless to follow it (stored into later)."""
    from newsq.store import events as outbox
    from newsq.store.database import Store

    settings = settings or Settings.from_env()
    store = Store.from_url(settings.database_url, create=follow)
    try:
        if follow:
            yield from outbox.follow(store, since, every=every)
        else:
            yield from outbox.read(store, since)
    finally:
        store.close()


def extract(html: str | bytes, url: str | None = None, *,
            settings: Settings | None = None) -> Article | Drop:  # fmt: skip
    """Clean one page offline, as ``newsq extract`` does: its article (text, title,
    author, date, language, site), or a :class:`~newsq.records.Drop` saying why there
    is none. Bytes are decoded as the fetch stage decodes a page served without a
    charset (``<meta charset>`` by its WHATWG label, else detected; ``decode_error``
    when they are no text); ``url`` resolves links, names the site and picks its rule
    of ``NEWSQ_SITES_FILE``; the page's bounds are ``settings``' ``NEWSQ_CLEAN_*``."""
    from newsq.clean.extract import extract as clean
    from newsq.clean.limits import CleanLimits
    from newsq.fetch.decoding import BodyError, decode_html
    from newsq.records import Drop
    from newsq.sites import rule_for

    if isinstance(html, bytes):
        try:
            html, _ = decode_html(html, None)
        except BodyError as exc:
            return Drop(exc.reason, str(exc))
    settings = settings or Settings.from_env()
    site = rule_for(settings.sites_file, url)
    return clean(html, url, CleanLimits.from_settings(settings), site)


END_POLL = 0.1
"""Seconds between polls of a wait whose last URLs are ending (see :func:`wait_for`)."""
END_FEW = 8
"""So few URLs left that they may be the last ones ending, whatever the poll saw end."""
END_LINGER = 2.0
"""Seconds after the last URL that ended that a wait keeps polling every END_POLL."""


def wait_for(ledger: Ledger, urls: list[str], timeout: float | None, *,
             every: float = 0.5, chunk: int = 2000, rescan: float = 10.0,
             on_poll: Callable[[int, int], None] | None = None) -> bool:  # fmt: skip
    """Poll the ledger, at first often, then every ``every`` seconds, until every one of
    ``urls`` (normalised) is terminal: True, or False once ``timeout`` passed.
    ``on_poll(done, total)`` runs after each poll.

    Each poll reads the ledger's count of terminal outcomes (one command); the states of
    the pending URLs are read only when that count says they may all have ended, or
    every ``rescan`` seconds (a retry takes a URL off the count), and then at most
    ``chunk`` of them a poll (a rolling window) by keys hashed once, as one ZMSCORE of
    each bucket's active set (the state read only of a URL never seen in it): waiting on a
    million URLs polls cheaply and leaves Redis and the CPU to the workers. Between
    reads, ``done`` is what the count added since the last pass (exact when nothing
    else runs on this Redis; never all of them before a pass has seen it).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    total = len(urls)
    pending = [ledger.key(url) for url in urls]
    live: set[str] = set()  # pending keys seen in their bucket's active set
    last_ended: int | None = None  # the count at the poll before
    cursor = 0
    seen, scanned = -1, -math.inf  # outcomes counted when the last pass began, and when
    after = 0  # outcomes counted once the last pass was over
    pause = min(every, 0.02)  # a quick URL is seen done at once; a long wait polls `every`
    progressed = time.monotonic()  # when the count of outcomes last grew
    while pending:
        cursor = cursor if cursor < len(pending) else 0
        ended = ledger.ended()  # a URL of ours that ends after `seen` was read counts here
        if cursor or ended - seen >= len(pending) or time.monotonic() - scanned >= rescan:
            if not cursor:  # a pass over the pending URLs begins
                seen, scanned = ended, time.monotonic()
            window = pending[cursor : cursor + chunk]
            # the active sets say which ended: one seen active that left them has (a
            # URL leaves only for a terminal state); one never seen there is read (it
            # ended before, or has no entry at all: not done)
            active = ledger.active_at(window)
            live.update(key for key, a in zip(window, active, strict=True) if a)
            out = [key for key, a in zip(window, active, strict=True) if not a]
            unsure = [key for key in out if key not in live]
            ended_at = set(out) - set(unsure)
            ended_at.update(k for k, s in zip(unsure, ledger.states_at(unsure), strict=True)
                            if s in TERMINAL)  # fmt: skip
            left = [key for key in window if key not in ended_at]
            pending[cursor : cursor + chunk] = left
            cursor += len(left)
            if cursor >= len(pending):
                ended = after = ledger.ended()
        since = min(max(0, ended - after), len(pending) - 1) if pending else 0
        if on_poll is not None:
            on_poll(total - len(pending) + since, total)
        if not pending:
            break
        now = time.monotonic()
        if deadline is not None and now > deadline:
            return False
        # the last of them ending at the rate of this poll, or a few left while URLs
        # end: look again soon, so the end is seen within END_POLL, not a whole `every`
        # later (the last one of a run is often a straggler a poll or two behind)
        near = False
        if last_ended is not None:
            if ended > last_ended:
                progressed = now
            remaining = len(pending) - since
            near = (0 < remaining <= max(2 * (ended - last_ended), END_FEW)
                    and now - progressed < END_LINGER)  # fmt: skip
        last_ended = ended
        time.sleep(min(pause, END_POLL) if near else pause)
        pause = min(every, pause * 1.5)
    return True


@contextmanager
def connect_ledger(settings: Settings, caller: str) -> Iterator[Ledger]:
    """The URL ledger on the shared state's Redis, connected (a ping) for the block;
    ``caller`` names what needs it when ``settings`` have no broker."""
    from newsq.connections import state_redis
    from newsq.ledger import Ledger

    if not settings.broker_url:
        raise ConfigError(f"{caller} needs NEWSQ_BROKER_URL (a redis:// URL)")
    client = state_redis(settings)
    try:
        client.ping()
        yield Ledger(client, settings.key_prefix, retention_days=settings.ledger_retention_days)
    finally:
        client.close()


def _listed(urls: Iterable[str]) -> list[str]:
    return [urls] if isinstance(urls, str) else list(urls)  # one URL is not its letters


def _typed(fields: dict[str, Any]) -> dict[str, Any]:
    """The ledger's string fields as the numbers they are; every time (the ledger's
    epoch seconds, the store's datetimes) in ISO 8601, UTC."""
    out = dict(fields)
    for names, kind in ((_INT_FIELDS, int), (_FLOAT_FIELDS, float)):
        for name in names:
            if isinstance(out.get(name), str) and out[name]:
                with suppress(ValueError):
                    out[name] = kind(out[name])
    for name in _TIME_FIELDS:
        if isinstance(out.get(name), str) and out[name]:
            with suppress(ValueError, OverflowError):
                out[name] = iso_time(datetime.fromtimestamp(float(out[name]), UTC))
    for name, value in out.items():
        if isinstance(value, datetime):
            out[name] = iso_time(value)
    return out


def iso_time(when: datetime) -> str:
    """``when`` in ISO 8601, UTC (``...+00:00``); a naive one is UTC (SQLite keeps those)."""
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)).isoformat()
