"""newsq's thread pool for Celery: up to ``--concurrency`` threads, as few running as
keep the core busy (``--pool threads`` in ``newsq worker``).

Celery's own thread pool is a :class:`concurrent.futures.ThreadPoolExecutor`: every
reserved task runs at once, on whichever thread has been idle longest. Ours starts a
task only while :meth:`newsq.workers.admission.Admission.may_start` allows (the rest wait in a
queue, not in parked threads) and hands each task to the thread that went idle last,
so a small, warm set of threads does the work when pages come fast, and the whole
pool when sites are slow. A task of the bulk lane (``newsq.feeds.send``) waits until no
fresh task does: a fresh one the worker reserves behind a backlog's prefetched batches
starts next, not after them. See :mod:`newsq.workers.admission` for the rule and
``bench/README.md`` for the measurements. The pool owns its admission, executor and
CPU lane, and hands itself to the process's runtime as it starts
(:class:`newsq.resources.Pool`), so that the tasks report their network waits to it,
run their CPU-heavy part on its lane and their batches side by side.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from celery.concurrency import thread

from newsq.config.celery import BULK
from newsq.resources import AnyPool, Runtime
from newsq.tasks.context import runtime
from newsq.workers.admission import TICK_S, Admission, CpuLane

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
T = TypeVar("T")
R = TypeVar("R")


class _Current(threading.local):
    worker: _Worker | None = None


_current = _Current()  # the pool thread this is, if any


def _run(item: _Item) -> bool:
    """Run ``item`` into its future, as the stdlib's executor does; False when it was
    cancelled before it started."""
    future, fn, args, kwargs = item
    if not future.set_running_or_notify_cancel():
        return False
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as exc:  # handed to the future, as the stdlib does
        future.set_exception(exc)
    return True


class _Worker:
    """One pool thread; parked on its own lock while idle."""

    def __init__(self, executor: AdaptiveExecutor) -> None:
        self.executor = executor
        self.item: _Item | None = None
        self.counts = True  # the item is a task for the CPU average (a batch is not)
        self.ready = threading.Lock()
        self.ready.acquire()
        self.thread = threading.Thread(target=self.run, name="newsq-pool", daemon=True)

    def give(self, item: _Item | None) -> None:
        self.item = item
        self.ready.release()

    def run(self) -> None:
        _current.worker = self
        while True:
            self.ready.acquire()
            item = self.item
            while item is not None:
                self.counts = True
                if _run(item) and self.counts:
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
        self._bulk: deque[_Item] = deque()  # started only when no other item waits
        self._parts: deque[_Item] = deque()  # the parts of a batch (side_by_side), first
        self._idle: list[_Worker] = []  # a stack: the thread parked last is warmest
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._tick, name="newsq-admission", daemon=True).start()

    def _tick(self) -> None:
        """Every ``TICK_S``, start what requests grown long now allow (no task ends or
        arrives to trigger it when every running task hangs on the network)."""
        while not self.stopped:
            time.sleep(TICK_S)
            if self._queue or self._parts or self._bulk:
                self._dispatch_locked()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._submit(self._queue, fn, args, kwargs)

    def submit_bulk(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """``submit``, for an item that starts only once no other item waits."""
        return self._submit(self._bulk, fn, args, kwargs)

    def _submit(self, queue: deque[_Item], fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Future[Any]:  # fmt: skip
        future: Future[Any] = Future()
        with self._lock:
            if self.stopped:
                raise RuntimeError("cannot submit to a pool that was shut down")
            queue.append((future, fn, args, kwargs))
            self._dispatch()
        return future

    def _dispatch_locked(self) -> None:
        with self._lock:
            self._dispatch()

    def _startable(self) -> bool:
        """Whether an item waits and may start now; locked."""
        waiting = self._parts or self._queue or self._bulk
        return bool(waiting) and not self.stopped and self.admission.may_start(self.running)

    def _pop(self) -> _Item:
        return (self._parts or self._queue or self._bulk).popleft()

    def _dispatch(self) -> None:
        """Start queued items on idle (or new) threads while admitted; locked."""
        while self._startable():
            if self._idle:
                worker = self._idle.pop()
            elif len(self._threads) < self.max_workers:
                worker = _Worker(self)
                self._threads.append(worker.thread)
                worker.thread.start()
            else:
                return
            self.running += 1
            worker.give(self._pop())

    def next_item(self, worker: _Worker) -> _Item | None:
        """What ``worker`` runs next: the queue's head if admitted, else None and the
        worker parks."""
        with self._lock:
            self.running -= 1
            if self._startable():
                self.running += 1
                return self._pop()
            self._idle.append(worker)
            self._dispatch()
            return None

    def side_by_side(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, run side by side on the pool as its own
        tasks would, from a task running on one of its threads (a batch of URLs: the
        batch takes one message, each URL a task's place in the pool).

        The parts start before any queued task, on threads the admission lets start;
        the calling task runs the parts nobody has taken yet in its own place, then
        leaves its place to the others while it waits for them. So a batch never waits
        on work queued after it, and batches that fill every thread still finish. A
        pool that is shutting down starts no part on another thread: the batch, which is
        running, finishes them itself. The first exception of a part is raised once
        every part has finished.
        """
        me = _current.worker
        if me is None or me.executor is not self:
            raise RuntimeError("side_by_side runs from a task of this pool")
        me.counts = False  # each part is counted as a task; the batch is not
        parts: list[_Item] = [(Future(), fn, (item,), {}) for item in items]
        with self._lock:
            self._parts.extend(parts)
            self._dispatch()
        for part in parts:
            with self._lock:
                try:
                    self._parts.remove(part)  # nobody has taken it yet
                except ValueError:
                    continue
            if _run(part):
                self.admission.finished()
        futures = [part[0] for part in parts]
        if not all(f.done() for f in futures):
            with self._lock:
                self.running -= 1
                self._dispatch()
            try:
                wait_all(futures)
            finally:
                with self._lock:
                    self.running += 1
        return [f.result() for f in futures]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = True) -> None:
        """Stop: running items finish (a running batch with its parts), queued ones
        are cancelled (``cancel_futures`` is accepted for the stdlib's signature; a
        queued item never starts after this)."""
        with self._lock:
            self.stopped = True
            for queue in (self._queue, self._bulk):
                while queue:
                    future = queue.popleft()[0]
                    future.cancel()
                    future.set_running_or_notify_cancel()  # wakes wait() on it, as the stdlib
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.give(None)
        if wait:
            for t in list(self._threads):
                t.join()


def _is_bulk(args: tuple[Any, ...] | None) -> bool:
    """Whether Celery's trace arguments (type, id, request, body, ...) are of a message
    of the bulk lane."""
    request = args[2] if args and len(args) > 2 else None
    if not isinstance(request, dict):
        return False
    return (request.get("delivery_info") or {}).get("priority") == BULK


class TaskPool(thread.TaskPool):
    """Celery's thread pool with :class:`AdaptiveExecutor` as its executor, and a
    :class:`~newsq.workers.admission.CpuLane` for the CPU-heavy part of its tasks; a
    :class:`newsq.resources.Pool` to the process's runtime."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admission = Admission()
        self.lane = CpuLane()
        self.executor = AdaptiveExecutor(self.limit, self.admission)
        self.side_by_side = self.executor.side_by_side
        self._runtime: Runtime | None = None

    def on_apply(self, target: Callable[..., Any], args: tuple[Any, ...] | None = None,
                 kwargs: dict[str, Any] | None = None, callback: Callable[..., Any] | None = None,
                 accept_callback: Callable[..., Any] | None = None,
                 **_: Any) -> thread.ApplyResult:  # fmt: skip
        """Celery's ``on_apply``, with a bulk task queued behind the fresh ones."""
        submit = self.executor.submit_bulk if _is_bulk(args) else self.executor.submit
        return thread.ApplyResult(
            submit(thread.apply_target, target, args, kwargs, callback, accept_callback)
        )

    def network_wait(self) -> AbstractContextManager[None]:
        return self.admission.network_wait()

    def on_start(self) -> None:
        super().on_start()
        try:
            self._runtime = runtime()
        except ValueError:  # no broker URL: the tasks fail on it, as they would anyway
            return
        self._runtime.pool = self

    def on_stop(self) -> None:
        super().on_stop()  # the running tasks finish, and none starts after
        if self._runtime is not None and self._runtime.pool is self:
            self._runtime.pool = AnyPool()
        self.lane.close()
