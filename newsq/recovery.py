"""URLs whose message the broker lost, found as soon as no message can stand for them.

A broker's master killed outright takes with it what it had not yet replicated: a
message just sent, or the record of one just taken (kombu's ``unacked`` hash), and
so a URL the ledger still calls ``queued`` or ``fetched`` with nothing left anywhere
to move it on. So does a worker killed just after kombu's Redis transport popped a
message for it, before it recorded the message as taken. The stuck check
(``requeue_stuck``) sends such a URL again only after ``NEWSQ_STUCK_AFTER`` (twice the
visibility timeout, two hours by default), as a URL merely slow looks the same while it
waits behind a backlog or in a worker's timer.

When the queues are empty a URL cannot be behind a backlog, and the messages workers
hold can be read: a non-terminal URL no held message names, whose host has nothing
waiting in the frontier, and which the ledger saw no progress of for
:func:`~newsq.config.celery.lost_after` seconds (30, or
``NEWSQ_STUCK_AFTER`` if shorter), is lost. Queues that never empty (a busy cluster)
are looked into once they have turned over (:class:`Turnover`): every message waiting
was sent after the last look, so one waiting then has been taken since. A URL is
looked for twice, :data:`CONFIRM` seconds apart, so one between two steps (a retry
sent, a frontier dispatch) is not taken for lost; a second message for a URL only slow
is harmless anyway (every step is idempotent). A held message that may stand for URLs
it does not name (a feed read, a backfill range: they move the ledger before their
URLs' messages exist) makes the check wait for another round.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import redis

from newsq.config.celery import (
    FETCH_MANY_TASK,
    FETCH_TASK,
    POLL_FEEDS_TASK,
    PROCESS_TASK,
    QUEUES,
    REQUEUE_STUCK_TASK,
    SENT_HEADER,
    queue_depths,
    queue_keys,
)
from newsq.urls import host_of

if TYPE_CHECKING:
    from newsq.ledger import Ledger

log = logging.getLogger(__name__)

CONFIRM = 2.0
"""Seconds between the two looks that must both find a URL lost."""

URL_TASKS = frozenset({FETCH_TASK, FETCH_MANY_TASK, PROCESS_TASK})
NO_URL_TASKS = frozenset({POLL_FEEDS_TASK, REQUEUE_STUCK_TASK})  # no URL waits on them


INTAKE_MOST = 3600.0
"""Seconds an intake's mark lasts at most: a crashed intake's is gone after it."""


def _intakes_key(key_prefix: str) -> str:
    return f"{key_prefix}:recovery:intakes"


@contextlib.contextmanager
def intake_mark(state: redis.Redis, key_prefix: str) -> Iterator[None]:
    """Mark an intake (``newsq enqueue``, ``newsq run``) while it runs: it writes all its
    URLs to the ledger before it sends their messages, and until it has, they look
    lost (no message stands for them), so no look is made meanwhile."""
    key, member = _intakes_key(key_prefix), uuid.uuid4().hex
    pipe = state.pipeline(transaction=False)
    pipe.zadd(key, {member: time.time() + INTAKE_MOST})
    pipe.expire(key, int(INTAKE_MOST) + 60)
    pipe.execute()
    try:
        yield
    finally:
        with contextlib.suppress(redis.RedisError):  # the mark's own expiry ends it
            state.zrem(key, member)


def intake_running(state: redis.Redis, key_prefix: str) -> bool:
    """Whether an intake has URLs in the ledger whose messages it may not have sent."""
    key = _intakes_key(key_prefix)
    pipe = state.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", time.time())
    pipe.zcard(key)
    return bool(pipe.execute()[1])


def backlog(broker: redis.Redis, key_prefix: str) -> int:
    """Messages waiting in newsq's queues, both lanes (not counting those taken)."""
    return sum(sum(lanes.values()) for lanes in queue_depths(broker, key_prefix).values())


def message_urls(message: dict[str, Any]) -> list[str]:
    """The URLs a kombu message of newsq's URL tasks (:data:`URL_TASKS`) names: its
    first argument, one URL or a batch (Celery's protocol 2 body: [args, kwargs,
    embed]). Raises ValueError, KeyError, IndexError or TypeError on another shape."""
    body = message["body"]
    if message["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    first = json.loads(body)[0][0]
    return [first] if isinstance(first, str) else list(first)


def held_urls(broker: redis.Redis, key_prefix: str) -> set[str] | None:
    """The URLs of the messages workers took and have not acked (running, or waiting
    in a worker's timer for their ETA); None when a held message may stand for URLs it
    does not name, or cannot be read."""
    values: list[bytes] = broker.hvals(f"{key_prefix}:q:unacked")  # type: ignore[assignment]
    urls: set[str] = set()
    for value in values:
        try:  # kombu's Redis transport: [message, exchange, routing key]
            message = json.loads(value)[0]
            task = message["headers"]["task"]
            if task in NO_URL_TASKS:
                continue
            if task not in URL_TASKS:
                return None
            urls.update(message_urls(message))
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    return urls


def oldest_sent(broker: redis.Redis, key_prefix: str) -> float | None:
    """When the oldest message waiting in newsq's queues was sent (its
    :data:`~newsq.config.celery.SENT_HEADER`; kombu pushes at one end of a list and
    takes from the other), infinity when none waits; None when one has no stamp (a
    sender of before) or cannot be read."""
    pipe = broker.pipeline(transaction=False)
    for queue in QUEUES:
        for key in queue_keys(key_prefix, queue):
            pipe.lindex(key, -1)
    oldest = float("inf")
    for raw in pipe.execute():
        if raw is None:
            continue
        try:
            oldest = min(oldest, float(json.loads(raw)["headers"][SENT_HEADER]))
        except (ValueError, KeyError, TypeError):
            return None
    return oldest


class Turnover:
    """Whether the queues, never empty, turned over since the watch last looked.

    Once every message waiting was sent after ``since`` (and ``margin`` more, for the
    senders' clocks), any message waiting at ``since`` has been taken: its URL moved on
    in the ledger, or a worker holds it. So a URL with no progress since before
    ``since`` that no held message names is lost, unless it is one the frontier's
    dispatcher sent meanwhile without touching the ledger (``dispatched_since``: only
    its own dispatches, so the look waits while the lease is younger than ``since``)."""

    def __init__(self, margin: float, dispatched_since: Callable[[float], set[str]],
                 held_since: Callable[[], float]) -> None:  # fmt: skip
        self.margin = margin
        self.dispatched_since = dispatched_since
        self.held_since = held_since
        self.since: float | None = None
        self._due = False  # the last cutoff was given: a look at it is being made

    def cutoff(self, broker: redis.Redis, key_prefix: str) -> float | None:
        """The time before which a URL's last progress must be for it to be looked at
        now, when the queues turned over since :attr:`since`; None otherwise (the first
        look marks it)."""
        if self.since is None or self.since - self.margin < self.held_since():
            self.since = time.time()
            return None
        oldest = oldest_sent(broker, key_prefix)
        if oldest is None or oldest <= self.since + self.margin:
            return None
        self._due = True
        return self.since - self.margin

    def looked(self) -> None:
        """After a look: if it was at a cutoff, the next turnover counts from now."""
        if self._due:
            self.since, self._due = time.time(), False


def find_lost(broker: redis.Redis, ledger: Ledger, key_prefix: str,
              waiting: Callable[[], Mapping[str, int]], older_than: float,
              limit: int = 10_000, turnover: Turnover | None = None) -> set[str]:  # fmt: skip
    """The non-terminal URLs no message stands for (one look). ``waiting``: the URLs in
    the frontier by host, read first, so a URL leaving it meanwhile is still counted.
    With ``turnover``, queues that are not empty are looked into once they turned over.

    The ledger's URLs are read only when more are unfinished than the frontier and the
    held messages account for: a long frontier costs a few commands a look."""
    hosts = waiting()
    if intake_running(ledger.redis, key_prefix):
        return set()
    slow = set(hosts)  # hosts whose URLs are waiting, not lost
    if backlog(broker, key_prefix):
        if turnover is None or (cutoff := turnover.cutoff(broker, key_prefix)) is None:
            return set()
        slow |= turnover.dispatched_since(cutoff)
        older_than = max(older_than, time.time() - cutoff)
    held = held_urls(broker, key_prefix)
    if held is None:
        return set()
    # a message acked just before a failover may still be held on the new master: only
    # the held URLs still active count (a ZMSCORE a bucket, not a read a URL)
    open_held = sum(ledger.active_at([ledger.key(url) for url in held]))
    if ledger.unfinished() <= sum(hosts.values()) + open_held:
        return set()
    stuck = ledger.stuck(older_than, limit=limit)
    return {url for url, _, _ in stuck if host_of(url) not in slow} - held


def requeue_lost(broker: redis.Redis, ledger: Ledger, key_prefix: str,
                 waiting: Callable[[], Mapping[str, int]], send: Callable[[str], None],
                 older_than: float, confirm: float = CONFIRM,
                 turnover: Turnover | None = None) -> list[str]:  # fmt: skip
    """Send again the URLs two looks ``confirm`` seconds apart both found lost."""
    first = find_lost(broker, ledger, key_prefix, waiting, older_than, turnover=turnover)
    if first:
        time.sleep(confirm)
        first &= find_lost(broker, ledger, key_prefix, waiting, older_than, turnover=turnover)
    if turnover is not None:
        turnover.looked()
    lost = sorted(first)
    if lost:
        log.warning("re-enqueueing %d URLs no message stood for (lost by the broker)", len(lost))
    from newsq.pipeline import requeue  # here: an intake marks itself without the pipeline

    return requeue(ledger, lost, send)


def take_turn(broker: redis.Redis, key_prefix: str, seconds: float) -> bool:
    """Whether this caller looks for lost URLs now: one look every ``seconds`` across
    the cluster (the workers' watches, beat's task), so two never send one URL twice."""
    return bool(broker.set(f"{key_prefix}:recovery:turn", "1", nx=True, px=int(seconds * 1000)))


class Watch:
    """Looks for lost URLs every ``every`` seconds, as a daemon thread of each process
    that runs the frontier's dispatcher, while ``leads()`` (it holds the lease).

    A cluster need not run beat to lose nothing: kombu's Redis transport pops a
    message (BRPOP) before it records it as unacked, and a worker killed in between
    takes the message with it, beyond any visibility timeout."""

    def __init__(self, look: Callable[[], object], leads: Callable[[], bool],
                 every: float) -> None:  # fmt: skip
        self.look, self.leads, self.every = look, leads, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="newsq-lost-watch", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not self.leads():
                continue
            try:
                self.look()
            except Exception as exc:  # Redis or the broker away: the next look
                log.warning("lost-URL watch: %s", exc)
