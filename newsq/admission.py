"""How many tasks one worker process runs at once: as few as keep its core busy.

A worker's thread pool needs many threads when sites are slow (at 200 ms a page, a
process keeps a dozen requests in flight to stay busy) but pays for every thread that
runs when they are fast: with the GIL, runnable threads take turns on the one core,
and each hand-over costs a context switch and the caches of the thread it interrupts.
Measured with ``bench.speed`` at 0 ms latency, 2 pool threads stored ~12 % more pages
per second than 16 on the same CPU (see ``bench/README.md``).

:class:`Admission` says how many may run: Little's law, from two moving averages,
the time a task waits on the network (``w``, reported by the fetch step) and the CPU
the process spends per task (``c``: its CPU time over the tasks it finished, taken
every few tasks, so work done for a task on other threads counts too). A task that
spends ``c`` on the
core and ``w`` waiting needs ``1 + w / c`` tasks running for the core never to idle;
with headroom::

    limit = clamp(ceil(HEADROOM * (1 + w / c)), FLOOR, ceiling)

Fast sites give 2 or 3; slow ones the whole pool. The pool that obeys it is
:class:`workers.pool.TaskPool`, which also gives the process a :class:`CpuLane`: one
thread that runs the CPU-heavy part of every task (clean, dedup, store), so it runs
with warm per-thread state (lxml's parser dictionaries, the allocator's caches, one
database connection) instead of on whichever of many pool threads fetched the page:
~1.4 ms less CPU per page at 200 ms (``bench/README.md``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

HEADROOM = 1.5
ALPHA = 0.2  # weight of the newest sample in the moving averages (~ the last 10 tasks)
FLOOR = 2  # one task on the core, one fetching the next page
# CPU per task before any was measured (a typical page, bench/README.md), so the first
# slow fetches open the pool at once; a sample counts for at most OUTLIER x the
# average, so a process's cold first tasks (lazy start-up) do not shut it again
PRIOR_CPU_S = 0.02
OUTLIER = 4.0
SAMPLE_TASKS = 8  # tasks per CPU sample


class Admission:
    """The number of tasks to run at once, from the measured wait and CPU per task."""

    def __init__(self, ceiling: int = 1, floor: int = FLOOR) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.wait_s: float | None = None  # moving average of network waits per task
        self.cpu_s = PRIOR_CPU_S  # moving average of CPU time per task
        self._lock = threading.Lock()
        self._tasks = 0
        self._cpu_mark = time.process_time()
        self.lane: CpuLane | None = None  # set by a thread pool

    @property
    def limit(self) -> int:
        """How many tasks may run now (``floor`` until a wait was measured)."""
        floor = min(self.floor, self.ceiling)
        if self.wait_s is None or self.cpu_s <= 0:
            return floor
        wanted = math.ceil(HEADROOM * (1 + self.wait_s / self.cpu_s))
        return max(floor, min(self.ceiling, wanted))

    def waited(self, seconds: float) -> None:
        """One network wait of a task (a fetch's wall time)."""
        with self._lock:
            self.wait_s = _average(self.wait_s, seconds)

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
        """One sample of the CPU time per task (a cold start counts as OUTLIER x the
        average at most)."""
        self.cpu_s = _average(self.cpu_s, min(seconds, OUTLIER * self.cpu_s))


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


_process: Admission | None = None
_process_lock = threading.Lock()


def process_admission() -> Admission:
    """This process's admission: the one its pool obeys and its tasks report to."""
    global _process
    with _process_lock:
        if _process is None:
            _process = Admission()
        return _process
