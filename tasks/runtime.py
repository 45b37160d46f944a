"""The worker process's :class:`~newsq.runtime.Runtime`, made after the fork."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from celery.signals import worker_process_init, worker_process_shutdown

from config.settings import get_settings
from newsq.errors import Retryable
from newsq.pipeline import backoff
from newsq.runtime import Runtime

log = logging.getLogger(__name__)
_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


@worker_process_init.connect
def _fresh_after_fork(**_: Any) -> None:
    # a forked child must not share the parent's sockets
    global _runtime
    _runtime = None


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    if _runtime is not None:
        _runtime.close()


@contextmanager
def transient_errors(url: str, retry: Callable[[float], Exception], attempt: int) -> Iterator[None]:
    """Map a lost Redis or database to a Celery retry with backoff.

    The delivery that failed this way is handed back, so it does not count towards
    the poison limit.
    """
    try:
        yield
    except (Retryable, redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("%s: %s; retrying", url, exc)
        with suppress(redis.RedisError):
            runtime().ledger.release(url)
        raise retry(backoff(min(attempt, 5))) from exc
