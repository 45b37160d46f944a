"""The backfill step, free of Celery: the records of one span of a WARC file through the
clean → dedup → store stages (:func:`newsq.pipeline.process_step`), not fetched again.

Each record's URL goes through the ledger as a fetched one would: ``begin`` as
``fetched``, then the terminal state with the same reason codes (a non-200 record ends
``skipped``/``http_error``, a non-HTML one ``skipped``/``bad_content_type``, a revisit
``skipped``/``revisit``). A URL already known (to the ledger, the store, or another
record in work: a claim per URL) is not processed again and counts as ``known``.
Records are read ahead :data:`BATCH` at a time: their claims, ledger states and store
records in one round trip each, their counts in one call after the batch.

A span delivered again (its worker died) skips the records its earlier delivery
counted; the one it was on when it died holds its URL's claim, so this delivery takes
it over and reads its outcome from the ledger if it was finished. Steps are idempotent
(the ledger's terminal states, the store's unique keys): nothing is stored twice.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
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
BATCH = 32
"""Records read ahead and looked up together (a span holds hundreds to thousands)."""
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
    fetcher, polite = (rt.fetcher, rt.politeness) if is_url(span.source) else (None, None)
    stream = open_at(span.source, scan_from(span.start, span.gzipped), fetcher, polite)
    try:
        first = record_start(stream, span.start, span.gzipped)
    finally:
        stream.close()
    if first is None or first >= span.end:
        return 0
    done = 0
    stream = open_at(span.source, first, fetcher, polite)
    try:
        records = read_records(stream, span.end, rt.settings.max_bytes)
        fresh = (r for r in records if r.offset not in counted)
        while batch := tuple(itertools.islice(fresh, BATCH)):  # read ahead, claimed together
            done += progress.count_many(span, _batch_step(rt, span, batch, guard, hand_on))
    finally:
        stream.close()
    return done


@dataclass(frozen=True)
class _Looked:
    """What one batch's look-ups tell of a record's URL (see :func:`record_step`)."""

    claim: bool | None
    state: str | None
    recorded: bool


def _batch_step(rt: Runtime, span: Span, batch: tuple[Record, ...], guard: Guard,
                hand_on: HandOn) -> list[tuple[int, str]]:  # fmt: skip
    """The outcome of each of ``batch``'s records, by offset: their URLs claimed, their
    ledger states and store records read in one round trip each, then one at a time
    through the pipeline. Counted by the caller after the batch: a delivery that dies
    within it does them again, each taking its own claim back (nothing twice)."""
    urls: list[str | None] = []
    for record in batch:
        try:
            urls.append(normalize(record.url or "") if record.outcome is not None else None)
        except InvalidURL:
            urls.append(None)
    wanted = [u for u in urls if u is not None]
    with guard(span.source):
        owners = [f"{span.job}:{r.offset}" for r, u in zip(batch, urls, strict=True) if u]
        claims = _claims(rt, wanted, owners)
        states = dict(zip(wanted, rt.ledger.states(wanted), strict=True))
        recorded = rt.store.recorded([u for u in wanted if states[u] is None]) if wanted else set()
    out = []
    for record, url in zip(batch, urls, strict=True):
        if url is None:
            outcome = "" if record.outcome is None else f"{FAILED}:{errors.INVALID_URL}"
        else:
            looked = _Looked(claims.pop(0), states[url], url in recorded)
            with guard(url):
                outcome = record_step(rt, span, record, url, looked, hand_on)
        out.append((record.offset, outcome))
    return out


def _claims(rt: Runtime, urls: list[str], owners: list[str]) -> list[bool | None]:
    """Claim each URL for its record (``owners``), in one round trip: True when new,
    False when this record held it already (a delivery before this one), None when
    another record holds it (an earlier URL of the same batch too)."""
    if not urls:
        return []
    ttl = int(rt.settings.visibility_timeout * 2)
    pipe = rt.redis.pipeline(transaction=False)
    for url, owner in zip(urls, owners, strict=True):
        key = f"{rt.settings.key_prefix}:backfill:claim:{url_id(url)}"
        pipe.set(key, owner, nx=True, ex=ttl)
        pipe.get(key)
    replies = pipe.execute()
    out: list[bool | None] = []
    for owner, new, holder in zip(owners, replies[::2], replies[1::2], strict=True):
        out.append(True if new else (False if text(holder or b"") == owner else None))
    return out


def outcome_of(step: Step) -> str:
    return f"{step.state}:{step.reason}" if step.reason else str(step.state)


def record_step(rt: Runtime, span: Span, record: Record, url: str, looked: _Looked,
                hand_on: HandOn) -> str:  # fmt: skip
    """One record (of a page capture, its URL ``url`` normalised) through the pipeline;
    returns its outcome (see ``progress``): ``held`` for a page the process step put
    off (it goes on as a process task of its own, and the job keeps its URL, whose
    outcome the ledger tells later)."""
    if looked.claim is None:
        return KNOWN
    state = looked.state
    if state is not None and not looked.claim:  # this record's own URL, before its worker died
        if state in TERMINAL:
            entry = rt.ledger.get(url) or {}
            return f"{state}:{entry['reason']}" if entry.get("reason") else state
    elif state is not None or looked.recorded:
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
