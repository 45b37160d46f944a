"""Sending URLs to the fetch stage: the one place a producer names the fetch tasks.

The URLs sent are ``queued`` in the ledger already (``intake.enqueue``,
``pipeline.requeue``); a message only names them. Messages go by task name, so a
producer (the CLI, the Python API) loads no task module and nothing the tasks import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from newsq.feeds.intake import batches

if TYPE_CHECKING:
    from celery import Celery


def send_fetches(app: Celery, urls: Sequence[str], batch: int = 1) -> int:
    """Send ``urls`` to the fetch queue, up to ``batch`` per message (sized by
    :func:`~newsq.feeds.intake.batches`): ``newsq.fetch`` for one URL,
    ``newsq.fetch_many`` for more. Returns the number of messages sent."""
    from newsq.config.celery import FETCH_MANY_TASK, FETCH_QUEUE, FETCH_TASK

    parts = batches(urls, batch)
    if not parts:
        return 0
    with app.producer_or_acquire() as producer:
        for part in parts:
            if len(part) == 1:
                app.send_task(FETCH_TASK, args=(part[0],), queue=FETCH_QUEUE, producer=producer)
            else:
                app.send_task(FETCH_MANY_TASK, args=(part,), queue=FETCH_QUEUE, producer=producer)
    return len(parts)


def one_by_one(app: Celery) -> Callable[[str], None]:
    """``send(url)`` for callers that find their URLs one at a time (the feed poller,
    the sweep for stuck URLs)."""

    def send(url: str) -> None:
        send_fetches(app, [url])

    return send
