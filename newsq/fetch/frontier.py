"""The frontier: URLs waiting for their host's turn wait in that host's queue in Redis.

A fetch whose host has no slot free now, or whose host already has URLs waiting,
parks its URL in the host's queue (:meth:`Frontier.offer`, one Lua call that also
asks politeness) and its task ends. One :class:`Dispatcher` per cluster (a thread in
every worker process; the holder of a renewing Redis lease works, the others stand by
and take over within seconds of its death) takes the hosts whose time has come, gives
each a concurrency slot when its rate allows, pops its next URL (fresh lane before
bulk) and sends it as a fetch task carrying the slot's lease and, for a host with a
rate, the request's start time, taken in the same call: the fetch waits until then
and, when it comes later than that (it waited in a queue), takes a new time
(:meth:`Frontier.claim`), so tasks that waited together cannot make a burst; it
releases the lease after the request. So a URL costs
the same few commands however long its host's backlog, and a slow host never holds up
another (``frontier.lua``).

At least once: a popped URL stays in the script's ``pending`` list until its task is
sent; a dispatcher that dies in between leaves it there, and the next dispatch puts
it back at the front of its host's queue. A fetch task lost with its worker is
delivered again by Celery, marked redelivered, and its lease, then stale, is given
back unused (``newsq.tasks.fetch``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import redis

from newsq.fetch.politeness import Politeness, fetch_tag, leases_key
from newsq.replies import text

log = logging.getLogger(__name__)

_FILES = resources.files("newsq.fetch")
_SCRIPT = (_FILES / "grant.lua").read_text() + (_FILES / "frontier.lua").read_text()

DISPATCH_AHEAD = 1.0
"""A host with a rate is given, in one dispatch, the URLs whose slots start within this
many seconds (each message waits for its first slot in its worker's timer, as its ETA,
``newsq.feeds.send.send_granted``): fewer dispatches a URL."""

CLOCK_EVERY = 30.0
"""Seconds between two readings of Redis' clock against this machine's."""

FRESH_LANE, BULK_LANE = 0, 9  # newsq.config.celery's FRESH and BULK, as the queues name them


@dataclass(frozen=True)
class Grant:
    """A URL the dispatcher took from its host's queue, with the slot it was granted."""

    url: str
    attempt: int
    lane: int
    lease: str
    host: str
    interval: float
    """the host's seconds between requests when it was dispatched (0: no limit)"""
    slot: float = 0.0
    """when its request may start, on Redis' clock (0: none taken: claim one)"""


def _grant(record: bytes | str) -> Grant:
    lease, host, _rate, _cap, interval, slot, lane, attempt, url = text(record).split("|", 8)
    return Grant(url, int(attempt), int(lane), lease, host, float(interval), float(slot))


class Frontier:
    """Per-host queues and their schedule, shared through Redis. Thread-safe."""

    def __init__(self, client: redis.Redis, politeness: Politeness) -> None:
        self._client = client
        self._politeness = politeness
        self.prefix = politeness.prefix  # the fetch tag: the script names keys from it
        self._script = client.register_script(_SCRIPT)
        self.due_key = f"{self.prefix}:frontier:due"
        self.pending_key = f"{self.prefix}:frontier:pending"
        self.lease_key = f"{self.prefix}:frontier:dispatcher"
        self.wake_key = f"{self.prefix}:frontier:wake"
        self._route = [self.due_key]  # a key of the script's slot: Redis Cluster sends it there
        self._intervals: dict[str, float] = {}  # host -> interval its last grant here had
        self._offset = 0.0  # Redis' clock less this machine's, as last measured
        self._measured = float("-inf")  # when (monotonic)

    def queue_key(self, host: str, lane: int) -> str:
        return f"{self.prefix}:frontier:{host}:{BULK_LANE if lane == BULK_LANE else FRESH_LANE}"

    def wait_wake(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a wake-up (a release made a waiting host
        due sooner, or :meth:`wake`); True when one came."""
        # BLPOP's 0 is "for ever": never ask for less than 10 ms
        return self._client.blpop([self.wake_key], timeout=max(0.01, timeout)) is not None

    def wake(self) -> None:
        """Wake the dispatcher blocked in :meth:`wait_wake`."""
        pipe = self._client.pipeline(transaction=False)
        pipe.lpush(self.wake_key, "1")
        pipe.ltrim(self.wake_key, 0, 0)
        pipe.expire(self.wake_key, 60)
        pipe.execute()

    def busy(self, hosts: Iterable[str]) -> bool:
        """Whether a URL of one of ``hosts`` waits in its queue or is being fetched (a
        request lease not expired yet): more of those hosts' pages are on their way."""
        pipe = self._client.pipeline(transaction=False)
        now = time.time()
        for host in {h.lower() for h in hosts}:
            pipe.exists(self.queue_key(host, FRESH_LANE), self.queue_key(host, BULK_LANE))
            pipe.zcount(leases_key(self.prefix, host), f"({now:.6f}", "+inf")
        return any(int(n) for n in pipe.execute())

    def offer(self, host: str, url: str, attempt: int, lane: int, *,
              front: bool = False) -> str | None:  # fmt: skip
        """The lease of a slot of ``host`` when ``url`` may be fetched now (release it
        after the request), else None: ``url`` waits in its host's queue (at the front
        of its lane when ``front``) for the dispatcher. Redis errors propagate."""
        host = host.lower()
        lease = uuid.uuid4().hex
        polite = self._politeness
        granted = self._script(
            keys=self._route,
            args=["park", self.prefix, host, f"{polite.rate_for(host):g}",
                  polite.concurrency_for(host), lease, polite.lease_ttl,
                  BULK_LANE if lane == BULK_LANE else FRESH_LANE, attempt, url,
                  "1" if front else "0", f"{self.clock():.6f}"],
        )  # fmt: skip
        if granted:  # {1, its interval}: remembered for its release
            if len(self._intervals) >= INTERVALS_KEPT:
                self._intervals.clear()
            self._intervals[host] = float(granted[1])
            return lease
        log.debug("%s: waits for its host %s's turn", url, host)
        return None

    def clock(self) -> float:
        """Redis' time now, from this machine's clock and their offset (measured with
        ``TIME`` every ``CLOCK_EVERY`` seconds): a granted slot is on Redis' clock."""
        if time.monotonic() - self._measured > CLOCK_EVERY:
            before = time.time()
            seconds, micros = self._client.time()
            after = time.time()
            self._offset = seconds + micros / 1e6 - (before + after) / 2
            self._measured = time.monotonic()
        return time.time() + self._offset

    def local(self, slot: float) -> float:
        """``slot``, a time on Redis' clock, on this machine's."""
        return slot - (self.clock() - time.time())

    def claim(self, host: str, interval: float, most: float) -> float:
        """A dispatched fetch of ``host`` takes its host's next request slot: the seconds
        until it starts (0.0: now; wait that long, then fetch), or, over ``most``, the
        seconds to it without taking it (the fetch should go back to the frontier)."""
        if interval <= 0:
            return 0.0
        claim = ["claim", self.prefix, host.lower(), f"{interval:.6f}", f"{most:.6f}"]
        return float(self._script(keys=self._route, args=claim))

    def release(self, host: str, lease: str) -> None:
        """Give back the slot ``lease`` of ``host`` (no-op when it expired)."""
        host = host.lower()
        interval = self._intervals.get(host)  # as its last grant here gave it, if any
        if self._politeness.rate_for(host) > 0 or (interval or 0) > 0:
            # its rate (or Crawl-delay), not a free slot, says when it goes next
            self._client.zrem(leases_key(self.prefix, host), lease)
        else:
            # "now" on Redis' clock from this side (no TIME in the script): it only says
            # the host, if it waits for a free slot, is due now; a host granted here
            # without an interval has no next allowed time to read
            now = f"{self.clock():.6f}"
            args = ["release", self.prefix, host, lease, now, "0" if interval == 0 else "?"]
            self._script(keys=self._route, args=args)

    def dispatch(self, holder: str, most: int, lease_seconds: float, *,
                 renew: bool = True, sent: bool = False,
                 recover: bool = True) -> tuple[bool, float, list[Grant]]:  # fmt: skip
        """(holds the dispatcher lease, seconds to the next due host or to the lease's
        end, -1 none, the URLs granted); the URLs stay pending until the next call says
        ``sent`` (or :meth:`sent`); ``recover`` puts back what is pending instead;
        ``renew`` extends the lease."""
        reply = self._script(
            keys=self._route,
            args=["dispatch", self.prefix, holder, int(lease_seconds * 1000), most,
                  self._politeness.lease_ttl, uuid.uuid4().hex, int(renew), int(sent),
                  int(recover), f"{DISPATCH_AHEAD:g}"],
        )  # fmt: skip
        holds, wait, *records = reply
        return bool(int(holds)), float(wait), [_grant(r) for r in records]

    def sent(self) -> None:
        """The URLs of the last dispatch are sent: nothing pending any more."""
        self._client.delete(self.pending_key)

    def resign(self, holder: str) -> None:
        """Give up the dispatcher lease, if ``holder`` has it: another takes over at once."""
        self._script(keys=self._route, args=["resign", self.prefix, holder])

    def hosts_waiting(self) -> int:
        """How many hosts have URLs waiting in the frontier."""
        return int(self._client.zcard(self.due_key))

    def waiting(self, limit: int = 10_000) -> dict[str, int]:
        """URLs waiting in the frontier per host (up to ``limit`` hosts)."""
        return _waiting(self._client, self.prefix, limit)


def waiting(client: redis.Redis, key_prefix: str, limit: int = 10_000) -> dict[str, int]:
    """URLs waiting in the frontier of ``key_prefix``, per host (up to ``limit`` hosts)."""
    return _waiting(client, fetch_tag(key_prefix), limit)


def _waiting(client: redis.Redis, tag: str, limit: int) -> dict[str, int]:
    base = f"{tag}:frontier:"
    found: list[bytes] = client.zrange(f"{base}due", 0, limit - 1)  # type: ignore[assignment]
    hosts = [text(h) for h in found]
    pipe = client.pipeline(transaction=False)
    for host in hosts:
        pipe.llen(f"{base}{host}:{FRESH_LANE}")
        pipe.llen(f"{base}{host}:{BULK_LANE}")
    sizes = pipe.execute()
    out = {h: int(sizes[2 * i]) + int(sizes[2 * i + 1]) for i, h in enumerate(hosts)}
    return {h: n for h, n in out.items() if n}


INTERVALS_KEPT = 10_000
"""Hosts whose interval a frontier remembers from their grants (then it starts over)."""


Send = Callable[[Sequence[Grant]], None]
"""Sends each granted URL as a fetch task carrying its lease, in its lane."""


class Dispatcher:
    """The frontier's dispatcher, as a daemon thread: only the lease holder dispatches.

    ``lease`` seconds without a renewal (the holder died) and another process's
    dispatcher takes over (those standing by ask every ``lease / 2`` seconds); a holder
    wakes at its next due host, at least every ``poll`` seconds, and renews the lease
    every ``lease / 4``.
    """

    def __init__(self, frontier: Frontier, send: Send, *, lease: float = 5.0,
                 poll: float = 1.0, most: int = 500) -> None:  # fmt: skip
        self.frontier = frontier
        self.send = send
        self.lease = lease
        self.poll = poll
        self.most = most
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.holding = False
        self.held_since = float("inf")  # time.time() it last took the lease
        self._renewed = float("-inf")  # when the lease was last extended
        self._sent = False  # the last dispatch's URLs are sent: the next call says so
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dispatched: dict[str, float] = {}  # host: when its last URL was taken
        self._dispatched_lock = threading.Lock()

    def dispatched_since(self, since: float) -> set[str]:
        """The hosts some of whose URLs this dispatcher took at ``since`` (``time.time()``)
        or later; it forgets those before. A URL taken leaves the frontier and its
        ledger entry untouched: its message may wait in a queue, sent long after the
        URL's last progress (``newsq.recovery``)."""
        with self._dispatched_lock:
            self._dispatched = {h: t for h, t in self._dispatched.items() if t >= since}
            return set(self._dispatched)

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(target=self._run, name="newsq-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and hand the lease on."""
        self._stop.set()
        if self.holding:  # it may be blocked waiting for a wake-up (else: at its poll)
            with contextlib.suppress(redis.RedisError):
                self.frontier.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._sent:
                self.frontier.sent()
            self.frontier.resign(self.holder)
        except redis.RedisError as exc:
            log.warning("frontier dispatcher: lease not handed back: %s", exc)

    def step(self) -> float:
        """One dispatch: the seconds to sleep before the next."""
        now = time.monotonic()
        renew = now - self._renewed >= self.lease / 4
        holds, wait, grants = self.frontier.dispatch(
            self.holder, self.most, self.lease, renew=renew, sent=self._sent,
            recover=not self.holding,
        )  # fmt: skip
        if holds and renew:
            self._renewed = now
        if holds != self.holding:
            role = "took over" if holds else "stands by"
            log.info("frontier dispatcher %s %s", self.holder, role)
            self.holding = holds
            self.held_since = time.time() if holds else float("inf")
        self._sent = False
        if grants:
            taken = time.time()
            with self._dispatched_lock:
                self._dispatched.update((grant.host, taken) for grant in grants)
            try:
                self.send(grants)
            except Exception:
                self.holding = False  # the next call puts them back: recover
                raise
            self._sent = True
        if not holds:  # standing by: ask often enough to take over soon after a death
            return max(self.poll, self.lease / 2)
        if len(grants) >= self.most:
            return 0.0
        return self.poll if wait < 0 else min(wait, self.poll)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pause = self.step()
            except Exception as exc:  # Redis or the broker away: try again shortly
                log.warning("frontier dispatcher: %s", exc)
                pause = self.poll
            self._pause(pause)

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``; the lease holder wakes sooner when a fetch's release made a
        waiting host due (a host without a rate, at its concurrency cap, gets its freed
        slot at once, not at the next poll). One standing by just sleeps."""
        if not self.holding or seconds <= 0:
            self._stop.wait(seconds)
            return
        try:
            self.frontier.wait_wake(seconds)
        except redis.RedisError:
            self._stop.wait(seconds)
