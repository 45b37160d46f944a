"""The backfill step, free of Celery: the records of one span of a WARC file through the
clean → dedup → store stages (:func:`newsq.pipeline.process_step`), not fetched again.

Each record's URL goes through the ledger as a fetched one would: ``begin`` as
``fetched``, then the terminal state with the same reason codes (a non-200 record ends
``skipped``/``http_error``, a non-HTML one ``skipped``/``bad_content_type``, a revisit
``skipped``/``revisit``). A URL already known (to the ledger, the store, or another
record in work: a claim per URL) is not processed again and counts as ``known``.

A span delivered again (its worker died) skips the records its earlier delivery
counted; the one it was on when it died holds its URL's claim, so this delivery takes
it over and reads its outcome from the ledger if it was finished. Steps are idempotent
(the ledger's terminal states, the store's unique keys): nothing is stored twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from warcio.recordloader import ArchiveLoadFailed

from newsq import errors
from newsq.backfill.progress import Progress, Span
from newsq.backfill.source import is_url, open_at
from newsq.backfill.warc import Record, Skip, read_records, record_start, scan_from
from newsq.errors import ConfigError, Retryable
from newsq.pipeline import Step, finish, poisoned, process_step
from newsq.records import FAILED, FETCHED, SKIPPED, TERMINAL
from newsq.replies import text
from newsq.urls import InvalidURL, normalize, url_id

if TYPE_CHECKING:
    from newsq.resources import Runtime

log = logging.getLogger(__name__)

KNOWN = "known"
HELD = "held"
Guard = Callable[[str], AbstractContextManager[object]]
"""``guard(url)`` wraps one record's work: the task's mapping of errors to retries."""
HandOn = Callable[[str, float], None]
"""``hand_on(url, countdown)``: send ``url``'s process task (its page waits in Redis)."""


def span_step(rt: Runtime, span: Span, guard: Guard, hand_on: HandOn) -> int:
    """Process the records that begin in ``span``; returns how many were counted now.

    A file that cannot be read (gone, no WARC, a URL that refuses ranges) ends the span
    with the job's ``error``; a Range request that may succeed later is retried."""
    progress = Progress(rt.redis, rt.settings.key_prefix)
    if progress.is_done(span):
        return 0  # a second delivery of a finished span
    try:
        done = _read_span(rt, span, progress, guard, hand_on)
    except Retryable as exc:  # a Range request timed out, a 5xx: the task's retry
        with guard(span.source):
            raise exc
    except (ConfigError, OSError, ArchiveLoadFailed) as exc:
        log.error("%s [%d, %d): %s", span.source, span.start, span.end, exc)
        rt.redis.hset(progress.key(span.job), "error", f"{span.source}: {exc}"[:500])
        done = 0
    progress.done(span)
    return done


def _read_span(rt: Runtime, span: Span, progress: Progress, guard: Guard,
               hand_on: HandOn) -> int:  # fmt: skip
    counted = progress.counted(span)
    fetcher = rt.fetcher if is_url(span.source) else None
    stream = open_at(span.source, scan_from(span.start, span.gzipped), fetcher)
    try:
        first = record_start(stream, span.start, span.gzipped)
    finally:
        stream.close()
    if first is None or first >= span.end:
        return 0
    done = 0
    stream = open_at(span.source, first, fetcher)
    try:
        for record in read_records(stream, span.end, rt.settings.max_bytes):
            if record.offset in counted:
                continue
            with guard(record.url or span.source):
                outcome = record_step(rt, span, record, hand_on)
            done += progress.count(span, record.offset, outcome)
    finally:
        stream.close()
    return done


def _claim(rt: Runtime, url: str, owner: str) -> bool | None:
    """Claim ``url`` for the record ``owner``: True when new, False when this record
    held it already (a delivery before this one), None when another record holds it."""
    key = f"{rt.settings.key_prefix}:backfill:claim:{url_id(url)}"
    if rt.redis.set(key, owner, nx=True, ex=int(rt.settings.visibility_timeout * 2)):
        return True
    return False if text(rt.redis.get(key) or b"") == owner else None


def outcome_of(step: Step) -> str:
    return f"{step.state}:{step.reason}" if step.reason else str(step.state)


def record_step(rt: Runtime, span: Span, record: Record, hand_on: HandOn) -> str:
    """One record through the pipeline; returns its outcome (see ``progress``): ``held``
    for a page the process step put off (it goes on as a process task of its own, and
    the job keeps its URL, whose outcome the ledger tells later)."""
    if record.outcome is None:
        return ""  # warcinfo, request, metadata: no capture of a page
    try:
        url = normalize(record.url or "")
    except InvalidURL:
        return f"{FAILED}:{errors.INVALID_URL}"
    claim = _claim(rt, url, f"{span.job}:{record.offset}")
    if claim is None:
        return KNOWN
    state = rt.ledger.states([url])[0]
    if state is not None and not claim:  # this record's own URL, before its worker died
        if state in TERMINAL:
            entry = rt.ledger.get(url) or {}
            return f"{state}:{entry['reason']}" if entry.get("reason") else state
    elif state is not None or rt.store.recorded([url]):
        return KNOWN  # another record's, an earlier run's, or a live fetch in flight
    _, deliveries = rt.ledger.begin(url, FETCHED)
    if deliveries == 0:
        return KNOWN
    if (step := poisoned(rt, url, deliveries)) is not None:
        return outcome_of(step)
    if isinstance(record.outcome, Skip):
        skip = record.outcome
        # an archived answer is final: a 404 or 500 there is no failure of this run
        end = SKIPPED if skip.reason in errors.SKIP_REASONS | {errors.HTTP_ERROR} else FAILED
        step = finish(rt, url, end, skip.reason, detail=skip.detail, attempts=1)
    else:
        step = rt.on_cpu(process_step, rt, url, record.outcome, 0)
        if step.action == "next":
            Progress(rt.redis, rt.settings.key_prefix).hold(span, url)
            hand_on(url, step.countdown)
            return HELD
    return outcome_of(step)
