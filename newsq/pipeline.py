"""The pipeline's steps, free of Celery: what one task does with one URL.

  1. fetch step   (I/O-bound, ``fetch`` queue): robots, politeness (a URL whose host
                  has no slot free waits in the frontier), the fetch itself
                  (an unreachable robots.txt is retried as a failed fetch would be);
                  the page body is handed to the next step through Redis (compressed,
                  with an expiry) so only the URL travels on the broker.
  2. process step (CPU-bound, ``process`` queue): clean → site boilerplate → dedup →
                  store, then the URL's terminal state.

Each step is idempotent: a URL already in a terminal state is skipped, dedup returns
the same verdict for a replayed copy, and the store's unique keys make a second write
a no-op. A step returns a :class:`Step` telling its task what to do next; expected
outcomes (a 404, no article, a duplicate) end the URL with a reason code.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from newsq import errors
from newsq.clean.boilerplate import Hold
from newsq.records import (
    DUPLICATE,
    FAILED,
    FETCHED,
    FETCHING,
    QUEUED,
    SKIPPED,
    STORED,
    Article,
    Drop,
    FetchResult,
)
from newsq.urls import host_of, url_id

if TYPE_CHECKING:
    from newsq.ledger import Ledger
    from newsq.resources import Runtime

log = logging.getLogger(__name__)

BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0


@dataclass(frozen=True)
class Page:
    """A fetched page on its way from the fetch step to the process step."""

    final_url: str
    fetched_at: datetime
    html: str
    raw: tuple[str, bytes] | None = field(default=None, repr=False)
    """Its HTTP head and body as fetched or archived, when kept (``NEWSQ_KEEP_RAW=1``)."""


@dataclass(frozen=True)
class Step:
    """What the task should do after a step.

    ``next``: hand the URL to the next stage; ``retry``: try again after ``countdown``
    seconds, spending one retry; ``parked``: the URL waits in the frontier for its
    host's turn (the dispatcher sends it on); ``done``: the URL reached ``state``. A
    ``next`` step of a fetch that was not handed off through Redis carries its ``page``.
    """

    action: Literal["next", "retry", "parked", "done"]
    countdown: float = 0.0
    state: str | None = None
    reason: str | None = None
    page: Page | None = None


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential with full jitter, capped;
    a server's Retry-After wins when it asks for longer."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)) + 0.5
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_CAP * 4))
    return delay


def body_key(rt: Runtime, url: str) -> str:
    return f"{rt.settings.key_prefix}:body:{url_id(url)}"


def _keep_body(rt: Runtime, url: str, page: Page) -> None:
    """``page`` in Redis for a process task to come, with its HTTP head and bytes as
    fetched when ``NEWSQ_KEEP_RAW`` keeps them (so its export replays: a key beside)."""
    payload = zlib.compress(page.html.encode("utf-8"), 1)
    meta = f"{page.final_url}\n{page.fetched_at.isoformat()}\n".encode()
    ttl = rt.settings.visibility_timeout * 2
    rt.redis.set(body_key(rt, url), meta + payload, ex=ttl)
    if page.raw is not None and rt.settings.keep_raw:
        head = page.raw[0].encode("utf-8", "surrogateescape")
        packed = len(head).to_bytes(4, "big") + head + page.raw[1]
        rt.redis.set(f"{body_key(rt, url)}:raw", zlib.compress(packed, 1), ex=ttl)


def _drop_body(rt: Runtime, url: str) -> None:
    pipe = rt.redis.pipeline(transaction=False)  # two slots on a Cluster: no one DEL
    for key in (body_key(rt, url), f"{body_key(rt, url)}:raw"):
        pipe.delete(key)
    pipe.execute()


VERDICT = ("story_id", "duplicate_of", "similarity", "match")  # of a copy, in its URL's record


@dataclass(frozen=True)
class Copy:
    """A page's copy for the store's ``articles`` table, with the HTML it came from."""

    row: dict[str, Any]
    html: str
    raw: tuple[str, bytes] | None = None

    @property
    def verdict(self) -> dict[str, Any]:
        """The dedup verdict, as the URL's record and the ledger keep it."""
        return {name: self.row[name] for name in VERDICT}


def finish(rt: Runtime, url: str, state: str, reason: str | None = None, *,
           detail: str | None = None, copy: Copy | None = None, **fields: Any) -> Step:  # fmt: skip
    """Record a terminal outcome in the store, then in the ledger (one move), then in
    the metrics: stored and duplicate (``copy``), skipped and failed alike.

    The store first: a crash between the two leaves the URL unfinished in the ledger,
    so it is delivered again and the store's second write is a no-op; the other way
    round, the ledger would skip the redelivery of a URL the store never recorded.
    A ``copy`` is saved with its URL's record in one transaction, its verdict in both;
    a skipped or failed URL's record takes ``reason``, ``detail`` and ``attempts``.
    ``fields`` go to the ledger (a skipped or failed URL's ``attempts`` only to its
    record: the ledger keeps the count its earlier moves set).
    """
    if copy is None:
        attempts = fields.pop("attempts", 0)
        rt.store.record_outcome(
            {"url": url, "state": state, "reason": reason, "detail": detail, "attempts": attempts}
        )
        fields = {"reason": reason, "detail": detail, **fields}
    else:
        started = time.perf_counter()
        raw = _raw_page(copy.row, copy.html, copy.raw) if rt.settings.keep_raw else None
        rt.store.save_article(copy.row, {"url": url, "state": state, **copy.verdict}, raw)
        rt.metrics.stage_time("store", time.perf_counter() - started)
        fields = {**copy.verdict, **fields}
    rt.ledger.move(url, state, **fields)
    rt.metrics.outcome(state, reason)
    if copy is None:
        log.info("%s %s: %s", url, state, reason)
    else:
        log.info("%s %s (story %s, %s)", url, state, copy.row["story_id"], copy.row["match"])
    return Step("done", state=state, reason=reason)


def poisoned(rt: Runtime, url: str, deliveries: int) -> Step | None:
    """End ``url`` as ``failed``/``poison`` when it killed its worker too often."""
    if deliveries <= rt.settings.max_deliveries:
        return None
    log.error("%s: gave up after %d deliveries that never finished", url, deliveries - 1)
    rt.ledger.add_dead(url)
    return finish(rt, url, FAILED, errors.POISON, detail=f"{deliveries - 1} deliveries lost")


def requeue(ledger: Ledger, urls: Iterable[str], send: Callable[[str], None]) -> list[str]:
    """Put each of ``urls`` back to ``queued`` (even from a terminal state: a user's
    retry), off the dead list, and ``send`` it to the fetch stage; returns the URLs."""
    done = []
    for url in urls:
        ledger.move(url, QUEUED, force=True, reason=None, attempts=0)
        ledger.remove_dead(url)
        send(url)
        done.append(url)
    return done


def requeue_stuck(ledger: Ledger, older_than: float, send: Callable[[str], None],
                  limit: int = 1_000_000,
                  waiting: Callable[[str], bool] | None = None) -> list[str]:  # fmt: skip
    """Re-enqueue the non-terminal URLs not updated for ``older_than`` seconds, but for
    those ``waiting`` says are slow, not lost (their host's frontier queue holds URLs).

    A URL that made no progress for longer than the visibility timeout lost its
    message (a broker restart without persistence, a publish that never happened).
    A second message for a URL that was only slow is harmless: every step is
    idempotent. Returns the URLs sent again ([] when none were stuck).
    """
    stuck = [url for url, _, _ in ledger.stuck(older_than, limit=limit)]
    if waiting is not None:
        stuck = [url for url in stuck if not waiting(url)]
    if stuck:
        log.warning("re-enqueueing %d URLs stuck for over %.0fs", len(stuck), older_than)
    return requeue(ledger, stuck, send)


# -- 1. fetch -----------------------------------------------------------------------


def fetch_step(rt: Runtime, url: str, attempt: int = 0, *, hand_off: bool = True,
               lane: int = 0, lease: str | None = None, interval: float = 0.0,
               slot: float = 0.0) -> Step:  # fmt: skip
    """Fetch ``url`` and leave its body for the process step.

    ``hand_off``: the body goes to Redis for a process task on any worker; without it,
    the page comes back in the step, for the caller to process at once (in memory).
    ``lease``: the concurrency slot the frontier's dispatcher granted this delivery, of
    a host then ``interval`` s between requests, whose request starts at ``slot``
    (Redis' clock; 0 or past: it takes a rate time as it starts;
    ``newsq.fetch.frontier``); without one, the fetch asks for a slot first, and a URL
    whose host has none free waits in the frontier, in ``lane`` (a ``parked`` step),
    its ledger entry untouched: ``queued`` since its enqueue or retry (after a worker
    died fetching it, ``fetching`` until its next delivery begins).
    """
    host = host_of(url)
    dispatched = lease is not None
    if lease is None and (lease := rt.frontier.offer(host, url, attempt, lane)) is None:
        rt.metrics.throttled(host)
        return Step("parked", state=QUEUED)
    previous, deliveries = rt.ledger.begin(url, FETCHING)
    if deliveries == 0:  # already terminal: a duplicate delivery
        rt.frontier.release(host, lease)
        return Step("done", state=previous)
    if (step := poisoned(rt, url, deliveries)) is not None:
        rt.frontier.release(host, lease)
        return step
    if dispatched and (lease := _claim(rt, url, host, lease, interval, attempt, lane,
                                       slot)) is None:  # fmt: skip
        return _parked(rt, url, host)

    robots_first = rt.robots_fetch_needed(url)
    if robots_first:
        # the robots.txt request is one of the host's requests: it takes the slot, and
        # the page then waits for the next one, first in its lane
        try:
            robots = rt.robots_verdict(url)
        finally:
            rt.frontier.release(host, lease)
    else:
        robots = rt.robots_verdict(url)
    if robots.failure is not None or not robots.allowed:
        if not robots_first:
            rt.frontier.release(host, lease)
        if robots.failure is not None:  # robots.txt unreachable: disallowed for now, retried
            return _not_fetched(rt, url, robots.failure, attempt, of="robots.txt ")
        return finish(rt, url, SKIPPED, errors.ROBOTS_DISALLOWED, attempts=attempt)
    if robots_first and (lease := rt.frontier.offer(host, url, attempt, lane, front=True)) is None:
        return _parked(rt, url, host)
    try:
        started = time.perf_counter()
        with rt.pool.network_wait():  # another task may start meanwhile
            result = rt.fetcher.fetch(url)
        rt.metrics.stage_time("fetch", time.perf_counter() - started)
    finally:
        rt.frontier.release(host, lease)

    if not result.ok:
        return _not_fetched(rt, url, result, attempt)

    if not hand_off:
        page = Page(result.final_url or url, datetime.now(UTC), result.text or "", result.raw)
        return Step("next", page=page)
    page = Page(result.final_url or url, datetime.now(UTC), result.text or "", result.raw)
    _keep_body(rt, url, page)
    rt.ledger.move(url, FETCHED, final_url=result.final_url, attempts=attempt + 1)
    return Step("next")


CLAIM_WAIT_MOST = 2.0
"""Longest a dispatched fetch waits, in its thread, for its host's rate time; longer
(many tasks of the host came out of a queue at once) and it waits in the frontier."""


def _claim(rt: Runtime, url: str, host: str, lease: str, interval: float, attempt: int,
           lane: int, slot: float = 0.0) -> str | None:  # fmt: skip
    """The lease to fetch ``url`` with, once its host's rate time has come: ``slot``, the
    one its dispatch took, when it is not past (else a new one); None when it went back
    to the frontier, first in its lane."""
    wait = slot - rt.frontier.clock() if slot > 0 else None
    while True:
        if wait is None or wait < -late_most(interval):  # none, or it passed
            wait = rt.frontier.claim(host, interval, CLAIM_WAIT_MOST)
        if wait > CLAIM_WAIT_MOST:
            rt.frontier.release(host, lease)
            return rt.frontier.offer(host, url, attempt, lane, front=True)
        if wait <= 0:
            return lease
        due = time.monotonic() + wait  # its slot is taken: it starts then
        with rt.pool.network_wait():
            time.sleep(wait)
        if time.monotonic() - due <= late_most(interval):
            return lease
        # it woke long after its slot (its process was paused): the slots after it went
        # to other fetches meanwhile, so going now would make a burst: a new slot
        log.info("%s: woke %.1fs after its slot, takes a new one", url, time.monotonic() - due)
        wait = None


CLAIM_LATE_MOST = 0.05
"""A fetch that wakes later than this (or half its host's interval) after its slot takes
a new one: a paused machine's fetches must not all go at once when it resumes."""


def late_most(interval: float) -> float:
    """How late after its slot a fetch may still go on it. Half an interval, not a
    whole one: the request reaches the host later still (a loaded worker's threads wait
    for the GIL), and two in a row late by most of an interval put limit + 2 requests
    in one second."""
    return max(interval / 2, CLAIM_LATE_MOST)


def _parked(rt: Runtime, url: str, host: str) -> Step:
    """``url``, begun, waits in its host's queue after its robots.txt: ``queued`` again.

    After the park, not before: moved first, a fetch granted at once would be
    ``queued``; a crash in between leaves it ``fetching`` and in the frontier."""
    rt.ledger.move(url, QUEUED)
    rt.metrics.throttled(host)
    return Step("parked", state=QUEUED)


def _not_fetched(rt: Runtime, url: str, result: FetchResult, attempt: int, of: str = "") -> Step:
    """A failed fetch of the page (or, ``of``, of its robots.txt): retried while it may
    succeed later and retries are left; else the URL ends with the fetch's reason."""
    if result.retryable and attempt < rt.settings.fetch_retries:
        delay = backoff(attempt, result.retry_after)
        rt.ledger.move(url, QUEUED, reason=result.reason, attempts=attempt + 1)
        log.info("%s: %s%s (status %s), retry in %.1fs", url, of, result.reason, result.status,
                 delay)  # fmt: skip
        return Step("retry", countdown=delay, reason=result.reason)
    state = SKIPPED if result.reason in errors.SKIP_REASONS else FAILED
    detail = f"HTTP {result.status}" if result.status else None
    if result.reason == errors.BAD_CONTENT_TYPE:  # the status was fine; the type was not
        detail = f"Content-Type {result.content_type or 'missing, body not HTML'}"
    if of:
        detail = of + (detail or result.reason or "")
    return finish(rt, url, state, result.reason, attempts=attempt + 1, detail=detail)


# -- 2. clean, dedup, store -----------------------------------------------------------


def _load_body(rt: Runtime, url: str) -> Page | None:
    pipe = rt.redis.pipeline(transaction=False)
    pipe.get(body_key(rt, url))
    pipe.get(f"{body_key(rt, url)}:raw")
    body, kept = pipe.execute()
    if not isinstance(body, bytes):
        return None
    final_url, fetched_at, payload = body.split(b"\n", 2)
    html = zlib.decompress(payload).decode("utf-8")
    raw = None
    if isinstance(kept, bytes):
        packed = zlib.decompress(kept)
        size = int.from_bytes(packed[:4], "big")
        raw = (packed[4 : 4 + size].decode("utf-8", "surrogateescape"), packed[4 + size :])
    return Page(final_url.decode(), datetime.fromisoformat(fetched_at.decode()), html, raw)


def _raw_page(row: dict[str, Any], html: str, raw: tuple[str, bytes] | None) -> dict[str, Any]:
    """The ``pages`` row of a stored copy: its HTML as decoded, UTF-8, zlib-compressed,
    and its HTTP head and body as fetched (or archived) when the page came with them."""
    return {
        "url": row["url"],
        "content_hash": row["content_hash"],
        "final_url": row["final_url"],
        "fetched_at": row["fetched_at"],
        "content_type": "text/html; charset=utf-8",
        "html_zlib": zlib.compress(html.encode("utf-8"), 6),
        "http_head": raw[0] if raw else None,
        "body_zlib": zlib.compress(raw[1], 6) if raw else None,
    }


def _more_coming(rt: Runtime, hosts: set[str]) -> bool:
    """Whether more pages of ``hosts`` may be on their way: a URL of theirs waits in the
    frontier or is being fetched, or any task waits in the broker's queues (which do not
    say their hosts). Asked only before a page would be held."""
    from newsq.config.celery import queue_depths  # Celery's: loaded in a worker

    if rt.frontier.busy(hosts):
        return True
    depths = queue_depths(rt.broker, rt.settings.key_prefix)
    return any(n for lanes in depths.values() for n in lanes.values())


def _hold(rt: Runtime, url: str, page: Page, countdown: float, handed_off: bool,
          extra: dict[str, Any]) -> Step:  # fmt: skip
    """``url``'s page waits for more pages of its site (``newsq.clean.boilerplate``): its
    body in Redis, the URL ``fetched``, a ``next`` step to process it in ``countdown``
    seconds. The wait hands its delivery back: it does not count towards poison."""
    if handed_off:
        rt.ledger.release(url)
    else:
        _keep_body(rt, url, page)
        rt.ledger.move(url, FETCHED, **extra)
    log.info("%s: held %.1fs for more pages of its site", url, countdown)
    return Step("next", countdown=countdown, state=FETCHED)


def process_step(rt: Runtime, url: str, page: Page | None = None, attempt: int = 0) -> Step:
    """Clean, deduplicate and store the fetched page of ``url``.

    Without ``page``, the page handed off through Redis (a delivery of its own); with
    it, the page that this delivery's fetch step (``attempt``) just fetched. A ``next``
    step: the page waits (a young site's short page), to be processed again after
    ``countdown`` seconds from the body now in Redis.
    """
    extra: dict[str, Any] = {}
    if page is None:
        previous, deliveries = rt.ledger.begin(url, FETCHED)
        if deliveries == 0:
            return Step("done", state=previous)
        if (step := poisoned(rt, url, deliveries)) is not None:
            return step
        page = _load_body(rt, url)
        if page is None:  # the body expired before a worker got to it: fetch again
            log.warning("%s: fetched body gone, fetching again", url)
            rt.ledger.move(url, QUEUED)
            return Step("retry", countdown=0, reason="body_lost")
        handed_off = True
    else:  # what the FETCHED move records when the page goes through Redis
        extra = {"final_url": page.final_url, "attempts": attempt + 1}
        handed_off = False
    final_url, fetched_at, html = page.final_url, page.fetched_at, page.html

    # 1. main text and metadata
    started = time.perf_counter()
    cleaned = rt.extract(html, final_url)
    # 2. the site's own template, learned across its pages; a young site's short page
    # waits for a few more of them (its text may be mostly the site's furniture)
    if isinstance(cleaned, Article):
        coming = partial(_more_coming, rt, {host_of(url), host_of(final_url)})
        judged = rt.boilerplate.strip(cleaned, url=final_url, coming=coming)
        if isinstance(judged, Hold):
            return _hold(rt, url, page, judged.countdown, handed_off, extra)
        cleaned = judged
    rt.metrics.stage_time("clean", time.perf_counter() - started)
    rt.metrics.extraction(host_of(final_url), cleaned)
    if isinstance(cleaned, Drop):
        step = finish(rt, url, SKIPPED, cleaned.reason, detail=cleaned.detail or None, **extra)
        if handed_off:
            _drop_body(rt, url)
        return step
    article = cleaned

    # 3. dedup: one atomic decision shared by every worker
    started = time.perf_counter()
    sk = rt.dedup.sketch(article.text)  # its text hash is the stored content hash
    verdict = rt.dedup.decide(
        url=url,
        final_url=final_url,
        canonical_url=article.canonical_url,
        text=article.text,
        site=article.site,
        title=article.title,
        sk=sk,
    )
    rt.metrics.stage_time("dedup", time.perf_counter() - started)

    # 4. store: the first copy keeps the text, later copies are provenance rows
    state = DUPLICATE if verdict.is_duplicate else STORED
    row = {
        "url": url,
        "final_url": final_url,
        **article.to_json(),
        "text": None if verdict.is_duplicate else article.text,
        "content_hash": sk.text_hash,
        "story_id": verdict.story_id,
        "duplicate_of": verdict.duplicate_of,
        "similarity": round(verdict.similarity, 4),
        "match": verdict.kind,
        "fetched_at": fetched_at,
    }
    step = finish(rt, url, state, copy=Copy(row, html, page.raw), **extra)
    if handed_off:
        _drop_body(rt, url)
    return step
