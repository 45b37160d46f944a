"""newsq's thread pool for Celery: up to ``--concurrency`` threads, as few running as
keep the core busy (``--pool threads`` in ``newsq worker``).

Celery's own thread pool is a :class:`concurrent.futures.ThreadPoolExecutor`: every
reserved task runs at once, on whichever thread has been idle longest. Ours starts a
task only while :meth:`newsq.admission.Admission.may_start` allows (the rest wait in a
queue, not in parked threads) and hands each task to the thread that went idle last,
so a small, warm set of threads does the work when pages come fast, and the whole
pool when sites are slow. See :mod:`newsq.admission` for the rule and
``bench/README.md`` for the measurements.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from celery.concurrency import thread

from newsq.admission import TICK_S, Admission, CpuLane, process_admission

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Worker:
    """One pool thread; parked on its own lock while idle."""

    def __init__(self, executor: AdaptiveExecutor) -> None:
        self.executor = executor
        self.item: _Item | None = None
        self.ready = threading.Lock()
        self.ready.acquire()
        self.thread = threading.Thread(target=self.run, name="newsq-pool", daemon=True)

    def give(self, item: _Item | None) -> None:
        self.item = item
        self.ready.release()

    def run(self) -> None:
        while True:
            self.ready.acquire()
            item = self.item
            while item is not None:
                future, fn, args, kwargs = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # handed to the future, as the stdlib does
                        future.set_exception(exc)
                    self.executor.admission.finished()
                item = self.executor.next_item(self)
            if self.executor.stopped:
                return


class AdaptiveExecutor:
    """The ``submit``/``shutdown`` of an executor; starts an item while the admission
    allows and a thread is free (at most ``max_workers``), newest-idle thread first."""

    def __init__(self, max_workers: int, admission: Admission) -> None:
        self.max_workers = max_workers
        self.admission = admission
        self.stopped = False
        self.running = 0
        self._queue: deque[_Item] = deque()
        self._idle: list[_Worker] = []  # a stack: the thread parked last is warmest
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._tick, name="newsq-admission", daemon=True).start()

    def _tick(self) -> None:
        """Every ``TICK_S``, start what requests grown long now allow (no task ends or
        arrives to trigger it when every running task hangs on the network)."""
        while not self.stopped:
            time.sleep(TICK_S)
            if self._queue:
                self._dispatch_locked()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self.stopped:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._queue.append((future, fn, args, kwargs))
            self._dispatch()
        return future

    def _dispatch_locked(self) -> None:
        with self._lock:
            self._dispatch()

    def _dispatch(self) -> None:
        """Start queued items on idle (or new) threads while admitted; locked."""
        while self._queue and not self.stopped and self.admission.may_start(self.running):
            if self._idle:
                worker = self._idle.pop()
            elif len(self._threads) < self.max_workers:
                worker = _Worker(self)
                self._threads.append(worker.thread)
                worker.thread.start()
            else:
                return
            self.running += 1
            worker.give(self._queue.popleft())

    def next_item(self, worker: _Worker) -> _Item | None:
        """What ``worker`` runs next: the queue's head if admitted, else None and the
        worker parks."""
        with self._lock:
            self.running -= 1
            if self._queue and not self.stopped and self.admission.may_start(self.running):
                self.running += 1
                return self._queue.popleft()
            self._idle.append(worker)
            self._dispatch()
            return None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = True) -> None:
        """Stop: running items finish, queued ones are cancelled (``cancel_futures``
        is accepted for the stdlib's signature; a queued item never starts after this)."""
        with self._lock:
            self.stopped = True
            while self._queue:
                self._queue.popleft()[0].cancel()
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.give(None)
        if wait:
            for t in list(self._threads):
                t.join()


class TaskPool(thread.TaskPool):
    """Celery's thread pool with :class:`AdaptiveExecutor` as its executor, and a
    :class:`~newsq.admission.CpuLane` for the CPU-heavy part of its tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        admission = process_admission()
        admission.lane = admission.lane or CpuLane()
        self.executor = AdaptiveExecutor(self.limit, admission)
