"""A backfill job's plan and progress in Redis, shared by the command and every worker.

A job is one WARC file (its name and size name it, so the same file given again is the
same job and only its unfinished ranges run). Each record is counted once by outcome,
however often its range is delivered (the Lua keeps the offsets of a range in work);
each range is marked done once, and its offsets then dropped.

Outcomes: ``stored``, ``duplicate``, ``known`` (its URL was known already: another
record's, an earlier run's, or a live fetch's), ``skipped:<reason>``, ``failed:<reason>``,
and ``held`` (a page the process step put off: the ledger tells its outcome later).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis

from newsq.records import TERMINAL
from newsq.replies import text

if TYPE_CHECKING:
    from newsq.ledger import Ledger

_SCRIPT = (resources.files("newsq.backfill") / "progress.lua").read_text()
KEEP_SECONDS = 7 * 86400
"""How long a job's progress is kept after its last range is done."""
_META = ("plan", "error", "started", "last", "base")  # a job's fields that count nothing
JOBS_SHOWN = 10


@dataclass(frozen=True)
class JobView:
    """One job as ``newsq stats`` shows it: its file, counters and rate."""

    job: str
    source: str
    counts: dict[str, int]
    started: float
    """When the latest ``newsq backfill`` of it planned its work (seconds since the epoch)."""
    rate: float
    """Records per second since then (to its last range done, once finished)."""

    @property
    def finished(self) -> bool:
        return self.counts.get("ranges_done", 0) >= self.counts.get("ranges", 0)


@dataclass(frozen=True)
class Span:
    """The records that begin in ``[start, end)`` of a job's file: one task's work."""

    job: str
    source: str
    index: int
    start: int
    end: int
    gzipped: bool

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "source": self.source, "index": self.index,
                "start": self.start, "end": self.end, "gzipped": self.gzipped}  # fmt: skip


def job_id(source: str, size: int) -> str:
    return hashlib.sha1(f"{source}\n{size}".encode()).hexdigest()[:16]


def split(job: str, source: str, size: int, gzipped: bool, pieces: int, least: int) -> list[Span]:
    """``size`` bytes in about ``pieces`` spans of at least ``least`` bytes each."""
    step = max(least, -(-size // max(pieces, 1)))
    starts = list(range(0, max(size, 1), step))
    return [Span(job, source, i, a, min(a + step, size), gzipped) for i, a in enumerate(starts)]


class Progress:
    """The job hashes under ``prefix``: plans, counters, done marks."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self.script = client.register_script(_SCRIPT)

    def key(self, job: str) -> str:
        """The job's hash; its other keys start with it (one hash tag: one slot)."""
        return f"{{{self.prefix}:backfill:{job}}}"

    @property
    def jobs_key(self) -> str:
        """The jobs by when they were last given (a sorted set), for ``newsq stats``."""
        return f"{{{self.prefix}:backfill}}:jobs"

    def _seen(self, span: Span) -> str:
        return f"{self.key(span.job)}:seen:{span.index}"

    def plan(self, spans: list[Span], size: int) -> list[Span]:
        """Record the job's plan (the first time only: a job given again keeps its first
        split) and return the spans of it not done yet."""
        if not spans:
            return []
        key = self.key(spans[0].job)
        plan = {"source": spans[0].source, "size": size, "spans": [[s.start, s.end] for s in spans]}
        self.redis.hsetnx(key, "plan", json.dumps(plan))
        kept = json.loads(text(self.redis.hget(key, "plan") or b"{}"))
        first = spans[0]
        spans = [Span(first.job, first.source, i, a, b, first.gzipped)
                 for i, (a, b) in enumerate(kept["spans"])]  # fmt: skip
        self.redis.hsetnx(key, "ranges", len(spans))
        self.redis.hsetnx(key, "bytes", size)
        done = self.redis.hmget(key, [f"done:{s.index}" for s in spans])
        todo = [s for s, mark in zip(spans, done, strict=True) if not mark]
        if todo:  # this run's rate counts from here, and from the records counted so far
            now = time.time()
            base = int(self.redis.hget(key, "records") or 0)
            self.redis.hset(key, mapping={"started": f"{now:.3f}", "base": base})
            self.redis.zadd(self.jobs_key, {first.job: now})
            self.redis.zremrangebyscore(self.jobs_key, 0, now - KEEP_SECONDS)  # kept no longer
        return todo

    def is_done(self, span: Span) -> bool:
        return bool(self.redis.hexists(self.key(span.job), f"done:{span.index}"))

    def counted(self, span: Span) -> set[int]:
        """The offsets of ``span``'s records counted by an earlier delivery of it."""
        return {int(k) for k in self.redis.hkeys(self._seen(span))}

    def count_many(self, span: Span, outcomes: Iterable[tuple[int, str]]) -> int:
        """Count each (record offset, outcome) of ``span`` once; returns how many were
        new (in one call: a batch of records is counted together)."""
        pairs = [item for offset, outcome in outcomes for item in (offset, outcome)]
        if not pairs:
            return 0
        keys = [self.key(span.job), self._seen(span)]
        return int(self.script(keys=keys, args=["count", KEEP_SECONDS, *pairs]))

    def hold(self, span: Span, url: str) -> None:
        """Keep ``url``, whose page the process step put off: its outcome comes later."""
        key = f"{self.key(span.job)}:held"
        self.redis.sadd(key, url)
        self.redis.expire(key, KEEP_SECONDS)

    def held(self, jobs: Iterable[str]) -> list[str]:
        return sorted(
            {text(u) for job in jobs for u in self.redis.smembers(f"{self.key(job)}:held")}
        )

    def done(self, span: Span) -> bool:
        keys = [self.key(span.job), self._seen(span)]
        return bool(self.script(keys=keys, args=["done", KEEP_SECONDS, span.index,
                                                 span.end - span.start, time.time()]))  # fmt: skip

    def totals(self, jobs: Iterable[str]) -> dict[str, int]:
        """The counters of ``jobs`` added up (the plan and done marks left out)."""
        out: dict[str, int] = {}
        for job in jobs:
            for name, value in self.redis.hgetall(self.key(job)).items():
                field = text(name)
                if field not in _META and not field.startswith("done:"):
                    out[field] = out.get(field, 0) + int(value)
        return out

    def settled(self, jobs: Iterable[str], ledger: Ledger) -> dict[str, int]:
        """:meth:`totals` with each ``held`` page counted by its URL's outcome now (a
        page still put off stays ``held``)."""
        jobs = list(jobs)
        out = self.totals(jobs)
        for url in self.held(jobs):
            entry = ledger.get(url) or {}
            state = entry.get("state", "")
            if state in TERMINAL:
                outcome = f"{state}:{entry['reason']}" if entry.get("reason") else state
                out[outcome] = out.get(outcome, 0) + 1
                out["held"] -= 1
        return out

    def errors(self, jobs: Iterable[str]) -> list[str]:
        """What ended a span of ``jobs`` early (a file gone, no WARC file), if anything."""
        found = [self.redis.hget(self.key(job), "error") for job in jobs]
        return [text(e) for e in found if e]

    def jobs(self, limit: int = JOBS_SHOWN) -> list[JobView]:
        """The ``limit`` jobs given last, newest first (those expired are forgotten)."""
        newest: list[bytes] = self.redis.zrevrange(self.jobs_key, 0, limit - 1)  # type: ignore[assignment]
        names = [text(j) for j in newest]
        pipe = self.redis.pipeline(transaction=False)
        for job in names:
            pipe.hgetall(self.key(job))
        views, gone = [], []
        for job, raw in zip(names, pipe.execute(), strict=True):
            fields = {text(k): text(v) for k, v in raw.items()}
            if "plan" not in fields:
                gone.append(job)
                continue
            views.append(_view(job, fields))
        if gone:
            self.redis.zrem(self.jobs_key, *gone)
        return views


def _view(job: str, fields: dict[str, str]) -> JobView:
    counts = {k: int(v) for k, v in fields.items() if k not in _META and not k.startswith("done:")}
    started = float(fields.get("started") or 0)
    view = JobView(job, json.loads(fields["plan"]).get("source", "?"), counts, started, 0.0)
    end = float(fields.get("last") or started) if view.finished else time.time()
    read = counts.get("records", 0) - int(fields.get("base") or 0)
    return replace(view, rate=read / (end - started) if end > started else 0.0)
