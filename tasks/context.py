"""The worker process's :class:`~newsq.resources.Runtime`, made after the fork, and the
one place where a stage's exceptions become Celery retries.

How a delivery that did not finish is handled (at least once, see ``newsq.config.celery``)::

    stage raised Retryable / lost Redis   handed back: retried with backoff, and the
                                          delivery is not counted towards poison
    soft time limit, any other exception  retried soon, the delivery *is* counted:
                                          after ``max_deliveries`` the URL ends as
                                          failed/poison (``newsq.pipeline.poisoned``)
    worker process killed (crash, OOM)    Celery requeues it (reject_on_worker_lost),
                                          or the visibility timeout delivers it again;
                                          counted the same way
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from newsq.config.celery import (
    BULK,
    FETCH_QUEUE,
    FRESH,
    app,
    look_every,
    lost_after,
    max_countdown,
)
from newsq.config.settings import get_settings
from newsq.errors import Retryable
from newsq.feeds.send import send_fetches, send_granted
from newsq.fetch.frontier import Dispatcher
from newsq.pipeline import backoff
from newsq.recovery import Turnover, Watch, requeue_lost, take_turn
from newsq.resources import Runtime

log = logging.getLogger(__name__)
_runtime: Runtime | None = None
_dispatcher: Dispatcher | None = None
_watch: Watch | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


@worker_process_init.connect
def _fresh_after_fork(**_: Any) -> None:
    # a forked child must not share the parent's sockets; it makes its own, now
    global _runtime, _dispatcher, _watch
    _runtime = None
    _dispatcher = _watch = None  # the parent's threads did not survive the fork
    _warm_up()
    _start_dispatcher()


@worker_ready.connect
def _warm_when_ready(sender: Any = None, **_: Any) -> None:
    """A thread (or solo) pool runs tasks in this process: make its resources before
    the first task. A prefork parent runs none (its children warm up after the fork)."""
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        _warm_up()
        _start_dispatcher()


def _warm_up() -> None:
    started = time.perf_counter()
    try:
        runtime().warm_up()
    except Exception as exc:  # the first task builds what is missing, and retries
        log.warning("worker warm-up incomplete: %s", exc)
        return
    log.info("worker warmed up in %.2f s", time.perf_counter() - started)


def _start_dispatcher() -> None:
    """The frontier's dispatcher, as a thread of each process that runs fetch tasks
    (the lease holder among them works, the others stand by), and beside it the watch
    for lost URLs, which looks while its dispatcher holds the lease."""
    global _dispatcher, _watch
    consumed = app.amqp.queues.consume_from
    if _dispatcher is not None or (consumed and FETCH_QUEUE not in consumed):
        return
    try:
        batch, frontier = runtime().settings.fetch_batch, runtime().frontier
        _dispatcher = Dispatcher(
            frontier, lambda grants: send_granted(app, grants, batch, frontier.local)
        )
    except Exception as exc:  # no broker configured: the worker itself will say so
        log.warning("frontier dispatcher not started: %s", exc)
        return
    _dispatcher.start()
    dispatcher = _dispatcher
    turnover = Turnover(lost_after(runtime().settings), dispatcher.dispatched_since,
                        lambda: dispatcher.held_since)  # fmt: skip
    _watch = Watch(lambda: send_lost(runtime(), turnover), lambda: dispatcher.holding,
                   look_every(runtime().settings)).start()  # fmt: skip


def send_lost(rt: Runtime, turnover: Turnover | None) -> list[str]:
    """Send again the URLs no message stands for (``newsq.recovery``), when it is this
    caller's turn to look; returns them. With ``turnover`` (the dispatcher's watch),
    also while the queues are never empty."""
    prefix = rt.settings.key_prefix
    urls: list[str] = []
    if take_turn(rt.broker, prefix, look_every(rt.settings)):
        requeue_lost(rt.broker, rt.ledger, prefix, rt.frontier.waiting, urls.append,
                     lost_after(rt.settings), turnover=turnover)  # fmt: skip
        send_fetches(app, urls, rt.settings.fetch_batch, lane=BULK)
    return urls


@worker_shutdown.connect
@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    global _dispatcher, _watch
    if _watch is not None:
        _watch.stop()
        _watch = None
    if _dispatcher is not None:
        _dispatcher.stop()
        _dispatcher = None
    if _runtime is not None:
        _runtime.close()


def lane_of(task: Task) -> int:
    """The lane (``FRESH`` or ``BULK``) the message ``task`` runs came in: what it sends
    on for the same URL (the next stage, a retry) goes in the same lane."""
    priority = (task.request.delivery_info or {}).get("priority")
    return BULK if priority == BULK else FRESH


def countdown(seconds: float) -> float:
    """``seconds``, bounded so a held countdown task never outlives the visibility
    timeout (which would deliver it a second time while it waits)."""
    return min(seconds, max_countdown(get_settings()))


def _note(url: str, error: BaseException) -> None:
    with suppress(redis.RedisError):
        runtime().ledger.note(url, last_error=f"{type(error).__name__}: {error}"[:300])


def _retry(retry: Callable[[float], Exception], delay: float) -> Exception:
    """``retry(delay)``; when the retry message cannot be sent (the broker is gone for
    longer than the publish retry policy) Celery would drop the delivery: reject it
    with requeue instead, or, if even that fails, leave it unacked for the visibility
    timeout to deliver again."""
    try:
        return retry(delay)
    except Reject as lost:
        if lost.requeue:
            raise
        return Reject(lost.reason, requeue=True)


@contextmanager
def transient_errors(url: str, retry: Callable[[float], Exception], attempt: int) -> Iterator[None]:
    """Map a stage's exceptions to a Celery retry (see the module docstring).

    Never swallows one: the ``with`` block either completes or raises a retry.
    """
    try:
        yield
    except (Retryable, redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("%s: %s; retrying", url, exc)
        with suppress(redis.RedisError):
            runtime().ledger.release(url)
        _note(url, exc)
        raise _retry(retry, countdown(backoff(min(attempt, 5)))) from exc
    except SoftTimeLimitExceeded as exc:
        log.error("%s: time limit exceeded; delivering again", url)
        _note(url, exc)
        raise _retry(retry, countdown(1.0)) from exc
    except Exception as exc:
        log.exception("%s: unexpected error; delivering again", url)
        _note(url, exc)
        raise _retry(retry, countdown(backoff(min(attempt, 3)))) from exc
