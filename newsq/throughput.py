"""A small time series of terminal outcomes in Redis, for rates over the last minute.

Each outcome adds one to a per-second counter: field ``<state>:<second>`` of a hash
per minute (``{prefix}:tput:<minute>``, on the ledger's hash tag), which expires after
a few minutes. The ledger's move to a terminal state writes it, in the same Lua call
(:meth:`newsq.ledger.Ledger.move`): no round trip of its own. Reading sums the
seconds of the window. Memory stays at a few hundred small fields however long the
pipeline runs, and every worker and reader agrees on the numbers because they live in
Redis, not in one process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis

from newsq.records import TERMINAL
from newsq.replies import text

KEEP_SECONDS = 300
MIN_SPAN = 5.0  # seconds: the first outcomes of a run are not extrapolated


def minute_key(tag: str, minute: int) -> str:
    """The hash of one minute's counts; ``tag`` is the ledger's ``{prefix}``."""
    return f"{tag}:tput:{minute}"


class Throughput:
    """Read per-second counts of terminal outcomes (the ledger writes them)."""

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
