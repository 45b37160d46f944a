"""How many tasks one worker process runs at once: as few as keep its core busy.

A worker's thread pool needs many threads when sites are slow (at 200 ms a page, a
process keeps a dozen requests in flight to stay busy) but pays for every thread that
runs when they are fast: with the GIL, runnable threads take turns on the one core,
and each hand-over costs a context switch and the caches of the thread it interrupts
(``bench/README.md`` has the measurements).

:meth:`Admission.may_start` lets a queued task start while either holds:

1. fewer than :attr:`Admission.limit` tasks run. The limit is Little's law, from two
   moving averages: the wall time of a fetch (``w``, reported by the fetch step) and
   the process's CPU time per finished task (``c``). A task that spends ``c`` on the
   core and ``w`` waiting needs ``1 + w / c`` tasks running for the core never to
   idle; with headroom, ``limit = ceil(HEADROOM * (1 + w / c))``: 2 or 3 with fast
   sites, the whole pool with slow ones;
2. fewer than :attr:`Admission.active` of the running tasks are off the network, a
   task counting as on it once its request (:meth:`Admission.network_wait`) has waited
   :meth:`Admission.long_wait` (50 ms, or twice the CPU per task if more). This opens
   the pool as soon as requests are seen to be slow, before any average exists, and
   keeps requests that hang until their timeout from starving the rest. Short waits
   do not count: at 0 ms they would admit a task on every fetch, and the extra
   threads would take turns again.

The pool caps both at its size. The pool that obeys it is :class:`newsq.workers.pool.TaskPool`,
which owns its admission and a :class:`CpuLane`: one thread that runs the CPU-heavy
part of every task (clean, dedup, store), so it runs with warm per-thread state
(lxml's parser dictionaries, the allocator's caches, one database connection) instead
of on whichever of many pool threads fetched the page.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

ACTIVE = 2  # tasks off the network: one on the core, one between its fetch and the core
HEADROOM = 1.5
ALPHA = 0.2  # weight of the newest sample in the moving averages (~ the last 10 tasks)
# CPU per task before any was measured (a typical page, bench/README.md); a sample
# counts for at most OUTLIER x the average, so a process's cold first tasks (lazy
# start-up) do not shut the pool
PRIOR_CPU_S = 0.02
OUTLIER = 4.0
SAMPLE_TASKS = 8  # finished tasks per CPU sample
LONG_WAIT_S = 0.05  # a request waiting this long (at least) leaves the core to others
TICK_S = 0.05  # how often the pool looks again at waits that grew long


class Admission:
    """Says whether another task may start, from what the running ones do now and
    from the measured network wait and CPU per task."""

    def __init__(self, active: int = ACTIVE) -> None:
        self.active = active
        self._waits: dict[object, float] = {}  # requests in network_wait(): start times
        self.wait_s: float | None = None  # moving average of a fetch's wall time
        self.cpu_s = PRIOR_CPU_S  # moving average of the process's CPU per task
        self._lock = threading.Lock()
        self._tasks = 0
        self._cpu_mark = time.process_time()

    @property
    def limit(self) -> int:
        """Little's law on the averages (``active`` until a fetch was measured)."""
        if self.wait_s is None or self.cpu_s <= 0:
            return self.active
        return max(self.active, math.ceil(HEADROOM * (1 + self.wait_s / self.cpu_s)))

    def long_wait(self) -> float:
        """How long a request must have waited to count as slow."""
        return max(LONG_WAIT_S, 2 * self.cpu_s)

    def waiting(self, now: float | None = None) -> int:
        """Requests of this process that have waited at least :meth:`long_wait`."""
        since = (time.perf_counter() if now is None else now) - self.long_wait()
        return sum(started <= since for started in list(self._waits.values()))

    def may_start(self, running: int) -> bool:
        """Whether a task may start while ``running`` tasks run (waiting ones included)."""
        return running < self.limit or running - self.waiting() < self.active

    def finished(self) -> None:
        """One task finished; every ``SAMPLE_TASKS`` the process's CPU time per task
        since the last sample is one sample of ``c``."""
        with self._lock:
            self._tasks += 1
            if self._tasks < SAMPLE_TASKS:
                return
            now = time.process_time()
            self.worked((now - self._cpu_mark) / self._tasks)
            self._tasks, self._cpu_mark = 0, now

    def worked(self, seconds: float) -> None:
        """One sample of the CPU time per task."""
        self.cpu_s = _average(self.cpu_s, min(seconds, OUTLIER * self.cpu_s))

    @contextmanager
    def network_wait(self) -> Iterator[None]:
        """Wrap a request: once it has waited long, another task may start; its wall
        time is one sample of ``w``."""
        token = object()
        started = self._waits[token] = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            del self._waits[token]
            with self._lock:
                self.wait_s = _average(self.wait_s, elapsed)


class CpuLane:
    """One thread of a worker process for the CPU-heavy part of its tasks."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsq-cpu")

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the lane's thread, after the work queued before it; its
        result or its exception comes back to the caller."""
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _average(old: float | None, sample: float) -> float:
    return sample if old is None else old + ALPHA * (sample - old)
