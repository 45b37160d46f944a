"""Sending URLs to the fetch stage: the one place a producer names the fetch tasks.

The URLs sent are ``queued`` in the ledger already (``intake.enqueue``,
``pipeline.requeue``); a message only names them. Messages go by task name, so a
producer (the CLI, the Python API) loads no task module and nothing the tasks import.

Fresh news first: every message goes in one of two lanes (``config/celery.py``).

    fresh  a feed poll's new URLs, up to ``FRESH_MOST`` of them (a feed's new items, a
           news sitemap's latest); one URL given alone (``newsq enqueue URL``,
           ``newsq retry URL``); a URL sent again (a retry) stays in its lane
    bulk   everything else: a URL file, more than ``FRESH_MOST`` URLs at once (a
           sitemap's backlog, a first poll of a big feed), URLs left by an earlier
           run, ``newsq retry --dead`` / ``--stuck`` and beat's re-queue of stuck URLs

A worker takes a bulk message only when no fresh one waits, so a story that breaks
during a backfill is fetched next, not after the backlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsq.feeds.intake import batches

if TYPE_CHECKING:
    from celery import Celery

    from newsq.fetch.frontier import Grant

log = logging.getLogger(__name__)

FRESH_MOST = 100
"""More new URLs than this in one go are a backlog: they go in the bulk lane."""

PIPELINE_MOST = 1000
"""Most messages sent to the broker in one pipeline (one round trip)."""

Message = tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]
"""A task message to send: task name, args, kwargs, ``send_task`` options."""


def lane_for(count: int, *, bulk: bool = False) -> int:
    """The lane of ``count`` URLs sent together: bulk when ``bulk`` (a URL file, a
    re-run) or over ``FRESH_MOST`` of them, else fresh."""
    from newsq.config.celery import BULK, FRESH

    return BULK if bulk or count > FRESH_MOST else FRESH


def send_fetches(app: Celery, urls: Sequence[str], batch: int = 1, *,
                 lane: int | None = None) -> int:  # fmt: skip
    """Send ``urls`` to the fetch queue, up to ``batch`` per message (sized by
    :func:`~newsq.feeds.intake.batches`): ``newsq.fetch`` for one URL,
    ``newsq.fetch_many`` for more; in ``lane`` (default: :func:`lane_for` their
    number). Returns the number of messages sent."""
    from newsq.config.celery import FETCH_MANY_TASK, FETCH_QUEUE, FETCH_TASK

    parts = batches(urls, batch)
    if not parts:
        return 0
    priority = lane_for(len(urls)) if lane is None else lane
    messages: list[Message] = []
    for part in parts:
        name, args = (FETCH_TASK, (part[0],)) if len(part) == 1 else (FETCH_MANY_TASK, (part,))
        messages.append((name, args, {}, {"queue": FETCH_QUEUE, "priority": priority}))
    publish(app, messages)
    return len(parts)


class LaneSender:
    """Sends an intake's new URLs as its chunks come (``intake.enqueue``'s ``send``), in
    the lane of the whole input: at once when it is bulk for sure (``bulk``, or over
    ``FRESH_MOST`` URLs so far), else held until :meth:`close` knows their number."""

    def __init__(self, app: Celery, batch: int, *, bulk: bool) -> None:
        self.app, self.batch, self.bulk = app, batch, bulk
        self.count = 0
        self.held: list[str] = []

    def __call__(self, urls: Sequence[str]) -> None:
        from newsq.config.celery import BULK

        self.count += len(urls)
        self.held.extend(urls)
        if lane_for(self.count, bulk=self.bulk) == BULK:
            self.close()

    def close(self) -> None:
        """Send what is held, in the lane of every URL sent so far."""
        send_fetches(self.app, self.held, self.batch, lane=lane_for(self.count, bulk=self.bulk))
        self.held.clear()


def publish(app: Celery, messages: Sequence[Message]) -> None:
    """Send ``messages`` (task name, args, kwargs, options), up to ``PIPELINE_MOST`` in
    one round trip to the broker (kombu's batch publish: one pipeline of LPUSHes).

    A pipeline runs without Celery's publish retries and, when it fails, delivery is
    uncertain: its messages are sent again one by one with those retries. A message
    then delivered twice is a duplicate delivery, as after a visibility timeout: the
    ledger skips a URL that ended, and the store keeps one copy of a story.
    """
    from kombu.exceptions import BatchPublishError

    with app.producer_or_acquire() as producer:
        for at in range(0, len(messages), PIPELINE_MOST):
            part = messages[at : at + PIPELINE_MOST]
            try:
                with producer.batch(max_size=PIPELINE_MOST):
                    _send(app, producer, part)
            except BatchPublishError:
                log.warning("broker pipeline failed: %d messages sent again one by one",
                            len(part))  # fmt: skip
                _send(app, producer, part)


def _send(app: Celery, producer: Any, messages: Sequence[Message]) -> None:
    for i, (name, args, kwargs, options) in enumerate(messages):
        # the queue is declared once a part, not checked again for each of its messages
        app.send_task(name, args=args, kwargs=kwargs, producer=producer,
                      argsrepr=_argsrepr(args), **({} if i == 0 else {"declare": []}),
                      **options)  # fmt: skip


def _argsrepr(args: tuple[Any, ...]) -> str:
    """A message's arguments as events and monitors show them: a batch's URLs as the
    first and a count (Celery's own repr walks every URL of every message)."""
    if args and isinstance(args[0], list) and len(args[0]) > 1:
        urls = args[0]
        return f"([{urls[0]!r}, ... {len(urls)} URLs],)"
    return repr(args)[:1024]


SLOT_SPREAD = 0.25
"""Most seconds between the first and last slot of one dispatched message: its URLs
wait for their slots in their fetches' threads, the message itself in the worker's
timer (its ETA), so this bounds the thread time a message holds."""

EARLY = 0.1
"""A dispatched message is due this much before its first slot: the timer's delivery
and a free thread of the pool take time on a busy worker, and a fetch that comes late
for its slot is a request packed closer to the one before it; early, it waits out the
rest in its thread."""


def send_granted(app: Celery, grants: Sequence[Grant], batch: int = 1,
                 local: Callable[[float], float] | None = None) -> None:  # fmt: skip
    """Send the URLs the frontier's dispatcher took, each with its politeness slot, in
    the fresh lane (its host's turn is now: behind a backlog it would come too late),
    naming the lane each waited in for the stages after it: up to ``batch`` a message
    (``newsq.fetch_many`` with their slots; one alone as ``newsq.fetch``), as a busy
    host's next slots come out of one dispatch together and a message costs the broker
    about ten commands. In the order of their slots, a message's within
    ``SLOT_SPREAD`` of each other; with ``local`` (a slot on Redis' clock to this
    machine's) a message whose first slot is ahead carries it as its ETA, so it waits
    in the worker's timer, not in a thread of its pool."""
    from newsq.config.celery import FETCH_MANY_TASK, FETCH_QUEUE, FETCH_TASK, FRESH

    size = max(1, batch)
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    now = time.time()
    messages: list[Message] = []
    for part in _by_slot(grants, size):
        if len(part) == 1:
            g = part[0]
            name, args, kwargs = (
                FETCH_TASK,
                (g.url, g.attempt, g.lease, g.interval, g.lane, g.slot),
                {},
            )
        else:
            slots = [[g.attempt, g.lease, g.interval, g.lane, g.slot] for g in part]
            name, args, kwargs = FETCH_MANY_TASK, ([g.url for g in part],), {"slots": slots}
        due = local(part[0].slot) - EARLY if local is not None and part[0].slot > 0 else 0.0
        eta = datetime.fromtimestamp(due, UTC) if due > now else None
        messages.append((name, args, kwargs, {"queue": FETCH_QUEUE, "priority": FRESH, "eta": eta}))
    publish(app, messages)


def _by_slot(grants: Sequence[Grant], size: int) -> list[list[Grant]]:
    """``grants`` in the order of their slots (those without one first), in parts of
    up to ``size`` whose slots lie within ``SLOT_SPREAD``."""
    parts: list[list[Grant]] = []
    for g in sorted(grants, key=lambda g: g.slot):  # stable: a host's URLs keep their order
        if parts and len(parts[-1]) < size and g.slot - parts[-1][0].slot <= SLOT_SPREAD:
            parts[-1].append(g)
        else:
            parts.append([g])
    return parts
