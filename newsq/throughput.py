"""A small time series of terminal outcomes in Redis, for rates over the last minute.

Each outcome adds one to a per-second counter: field ``<state>:<second>`` of a hash
per minute (``{prefix}:tput:<minute>``, on the dead list's hash tag), which expires after
a few minutes. The ledger's move to a terminal state counts it in its process's
:class:`Recorder`, which adds what it counted to Redis once a second in one pipeline
(a few commands a second per process, not two per URL). Reading sums the seconds of
the window. Memory stays at a few hundred small fields however long the pipeline runs,
and every worker and reader agrees on the numbers because they live in Redis, not in
one process; a process killed outright takes its last second's counts with it.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable

import redis

from newsq.records import TERMINAL
from newsq.replies import text

log = logging.getLogger(__name__)

KEEP_SECONDS = 300
MIN_SPAN = 5.0  # seconds: the first outcomes of a run are not extrapolated
FLUSH_SECONDS = 1.0  # a process adds its counts to Redis this often


def minute_key(tag: str, minute: int) -> str:
    """The hash of one minute's counts; ``tag`` is the ledger's ``{prefix}``."""
    return f"{tag}:tput:{minute}"


class Recorder:
    """One process's terminal outcomes, counted in memory and added to the series in
    Redis :data:`FLUSH_SECONDS` after the first one not yet there (and at exit)."""

    def __init__(self, client: redis.Redis, tag: str, every: float = FLUSH_SECONDS) -> None:
        self.client = client
        self.tag = tag  # the ledger's {prefix}
        self.every = every
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        """A fresh start, also in a forked child: the parent's counts are the parent's to
        add, its timer thread is not there, and its lock may have been held by it."""
        self._lock = threading.Lock()
        self._counts: Counter[tuple[int, str]] = Counter()  # (second, state) -> outcomes
        self._timer: threading.Timer | None = None

    def add(self, state: str, now: float) -> None:
        with self._lock:
            self._counts[(int(now), state)] += 1
            if self._timer is None:
                self._timer = threading.Timer(self.every, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add the counts not yet in Redis: one pipeline, an HINCRBY per second and state."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if not counts:
            return
        pipe = self.client.pipeline(transaction=False)
        minutes = set()
        for (second, state), n in sorted(counts.items()):
            pipe.hincrby(minute_key(self.tag, second // 60), f"{state}:{second}", n)
            minutes.add(second // 60)
        for minute in sorted(minutes):
            pipe.expire(minute_key(self.tag, minute), KEEP_SECONDS)
        try:
            pipe.execute()
        # (a cluster that cannot be reached raises no RedisError)
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            log.debug("throughput: %d outcomes not added: %s", sum(counts.values()), exc)


_LIVE: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for recorder in list(_LIVE):
        recorder.flush()


def _after_fork() -> None:
    for recorder in list(_LIVE):
        recorder._reset()


os.register_at_fork(after_in_child=_after_fork)


class Throughput:
    """Read per-second counts of terminal outcomes (the ledger's :class:`Recorder`s
    write them)."""

    def __init__(self, client: Callable[[], redis.Redis], key_prefix: str) -> None:
        self._client = client  # resolved on use
        self.tag = f"{{{key_prefix}}}"

    def key(self, minute: int) -> str:
        return minute_key(self.tag, minute)

    def counts(self, window: float = 60.0, now: float | None = None) -> dict[str, int]:
        """Outcomes per terminal state in the last ``window`` seconds (at most 5 min)."""
        return self._read(window, now)[0]

    def _read(self, window: float, now: float | None) -> tuple[dict[str, int], int | None]:
        """The window's counts per state, and its first second with an outcome (or None)."""
        now = time.time() if now is None else now
        window = min(window, KEEP_SECONDS - 60)
        first, last = int(now - window), int(now)
        pipe = self._client().pipeline(transaction=False)
        minutes = range(first // 60, last // 60 + 1)
        for minute in minutes:
            pipe.hgetall(self.key(minute))
        out = dict.fromkeys(sorted(TERMINAL), 0)
        earliest: int | None = None
        for fields in pipe.execute():
            for name, value in fields.items():
                state, _, raw_second = text(name).rpartition(":")
                second = int(raw_second)
                if first < second <= last and state in out:
                    out[state] += int(value)
                    earliest = second if earliest is None else min(earliest, second)
        return out, earliest

    def rates(self, window: float = 60.0, now: float | None = None) -> dict[str, float]:
        """Per-second rates over the window: each terminal state, ``articles``
        (stored + duplicate) and ``urls`` (all terminal outcomes).

        Work that began inside the window is measured from its first outcome, not over
        the whole window (a run 10 s old at 10 URLs/s shows 10/s, not 100/60), as
        ``newsq run``'s own rate is; never over less than ``MIN_SPAN`` seconds."""
        now = time.time() if now is None else now
        counts, earliest = self._read(window, now)
        seconds = max(1.0, math.floor(min(window, KEEP_SECONDS - 60)))
        if earliest is not None:
            seconds = min(seconds, max(MIN_SPAN, int(now) - earliest + 1))
        out = {state: n / seconds for state, n in counts.items()}
        out["articles"] = (counts["stored"] + counts["duplicate"]) / seconds
        out["urls"] = sum(counts.values()) / seconds
        return out
