"""The URL ledger: every enqueued URL's state, shared by all workers in Redis.

One hash per URL (state, reason, attempts, deliveries, story, timings) plus a counter
per state and a sorted set of URLs not yet in a terminal state (by last update), so
``newsq status`` answers at once and stuck URLs can be found; and the dead list, the
URLs given up as poison within the retention. Every state change is one Lua call, so
the counters never drift from the hashes and concurrent enqueuers agree on which URLs
are new. All keys carry one hash tag (``{prefix}``): on Redis Cluster the
ledger lives on one shard.

The ledger is the live view: a URL's hash lives while the URL is in flight and for the
retention (``NEWSQ_LEDGER_RETENTION_DAYS``) after it reached a terminal state, then
expires. The store's ``urls`` table keeps each terminal outcome for good, so
:meth:`Ledger.enqueue` asks it (``recorded``) about the URLs it found no entry for:
a URL known to the store is not sent again after its entry expired.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis

from newsq.records import STATES, TERMINAL
from newsq.replies import text
from newsq.throughput import Recorder
from newsq.urls import url_id

_SCRIPT = (resources.files("newsq") / "ledger.lua").read_text()
RETENTION_DAYS = 7.0
"""How long a terminal URL's entry is kept by default (``NEWSQ_LEDGER_RETENTION_DAYS``)."""

Recorded = Callable[[Sequence[str]], set[str]]
"""``recorded(urls)``: those of ``urls`` the store holds a terminal record of."""


def expiry_seconds(days: float) -> int:
    """``days`` as the whole seconds an EXPIRE takes: rounded up, at least 1."""
    return max(1, math.ceil(days * 86400))


class Ledger:
    """Atomic URL state transitions in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, *,
                 retention_days: float = RETENTION_DAYS) -> None:  # fmt: skip
        self.redis = client
        self.retention = expiry_seconds(retention_days)
        self.tag = f"{{{prefix}}}"
        self.counts_key = f"{self.tag}:counts"
        self.active_key = f"{self.tag}:active"
        self.reasons_key = f"{self.tag}:reasons"
        self.dead_key = f"{self.tag}:dead:since"
        self.old_dead_key = f"{self.tag}:dead"  # a set, before the dead list was bounded
        self.script = client.register_script(_SCRIPT)
        self.throughput = Recorder(client, self.tag)  # this process's terminal outcomes

    def key(self, url: str) -> str:
        return f"{self.tag}:url:{url_id(url)}"

    def enqueue(self, urls: Sequence[str], *, recorded: Recorded | None = None,
                batch: int = 500) -> list[bool]:  # fmt: skip
        """Create each unknown URL as ``queued``; True for the new ones, in order.

        A URL with a live entry is known. The others are claimed (one Lua call, so of
        concurrent enqueuers exactly one claims a URL); of those, the ones ``recorded``
        finds in the store (their entry expired) are known too, and their claims are
        dropped. Without ``recorded`` only the live entries count.
        """
        out: list[bool] = []
        for i in range(0, len(urls), batch):
            chunk = urls[i : i + batch]
            stamp = repr(time.time())  # the claim's mark: unclaim drops only its own claims
            keys = [self.counts_key, self.active_key, *(self.key(u) for u in chunk)]
            flags = [bool(f) for f in self.script(keys=keys, args=["enqueue", stamp, *chunk])]
            claimed = [u for u, new in zip(chunk, flags, strict=True) if new]
            known = recorded(claimed) if recorded is not None and claimed else set()
            if known:
                keys = [self.counts_key, self.active_key, *(self.key(u) for u in known)]
                self.script(keys=keys, args=["unclaim", stamp])
                flags = [new and u not in known for u, new in zip(chunk, flags, strict=True)]
            out.extend(flags)
        return out

    def begin(self, url: str, state: str) -> tuple[str | None, int]:
        """A worker takes ``url``: returns (previous state, deliveries so far).

        A URL already in a terminal state is left as it is and returned with 0
        deliveries: the caller skips the work (a duplicate delivery).
        """
        old, deliveries = self.script(
            keys=[self.key(url), self.counts_key, self.active_key],
            args=["begin", state, time.time(), url],
        )
        return (text(old) if old else None), int(deliveries)

    def move(self, url: str, state: str, *, force: bool = False, **fields: Any) -> str | None:
        """Set ``url``'s state and fields; returns the previous state.

        A URL in a terminal state keeps it unless ``force`` (a user's retry). A field
        given as None is removed. Reaching a terminal state starts the entry's retention
        in the same call (leaving one, a retry, keeps the entry until it ends again), and
        is counted in the throughput series (:mod:`newsq.throughput`), which this
        process adds to Redis once a second (:meth:`flush` at once).
        """
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        now = time.time()
        args: list[Any] = ["move", state, now, "1" if force else "0", self.retention, url]
        for name, value in fields.items():
            args += [name, "" if value is None else value]
        keys = [self.key(url), self.counts_key, self.active_key, self.reasons_key]
        old = text(self.script(keys=keys, args=args)) or None
        if state in TERMINAL and (force or old not in TERMINAL):  # else: left as it was
            self.throughput.add(state, now)
        return old

    def flush(self) -> None:
        """Add this process's outcomes not yet in the throughput series to it now."""
        self.throughput.flush()

    def note(self, url: str, **fields: str) -> None:
        """Record fields (e.g. ``last_error``) of a known URL without changing its state."""
        if fields:  # in Lua: an entry that expired meanwhile is not made again, forever
            pairs = [item for pair in fields.items() for item in pair]
            self.script(keys=[self.key(url)], args=["note", *pairs])

    def note_many(self, fields: Mapping[str, Mapping[str, str]]) -> None:
        """:meth:`note` for many URLs at once: one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for url, values in fields.items():
            if values:
                pairs = [item for pair in values.items() for item in pair]
                self.script(keys=[self.key(url)], args=["note", *pairs], client=pipe)
        pipe.execute()

    def release(self, url: str) -> None:
        """Hand back a delivery that ended in a handled error (not a crash)."""
        self.script(keys=[self.key(url)], args=["release"])

    def get(self, url: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(self.key(url))
        return {text(k): text(v) for k, v in raw.items()} if raw else None

    def states(self, urls: Iterable[str]) -> list[str | None]:
        return self.states_at([self.key(url) for url in urls])

    def states_at(self, keys: Sequence[str]) -> list[str | None]:
        """The states of the URLs whose ledger keys (``key(url)``) are ``keys``, in order."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "state")
        return [text(s) if s else None for s in pipe.execute()]

    def counts(self) -> dict[str, int]:
        raw = self.redis.hgetall(self.counts_key)
        counts = {text(k): int(v) for k, v in raw.items()}
        return {s: counts.get(s, 0) for s in STATES}

    def ended(self) -> int:
        """Terminal outcomes so far, of every URL (one command): a waiter reads the
        states of its URLs again only once enough of them may have ended."""
        values: list[bytes | None] = self.redis.hmget(self.counts_key, sorted(TERMINAL))  # type: ignore[assignment]
        return sum(int(v or 0) for v in values)

    def reasons(self) -> dict[str, int]:
        raw = self.redis.hgetall(self.reasons_key)
        return {text(k): int(v) for k, v in raw.items() if int(v)}

    def stuck(self, older_than: float, limit: int = 100) -> list[tuple[str, str, float]]:
        """Non-terminal URLs not updated for ``older_than`` seconds: (url, state, age)."""
        now = time.time()
        keys: list[bytes] = self.redis.zrangebyscore(self.active_key, 0, now - older_than, 0, limit)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "url", "state", "t_upd")
        out = []
        for url, state, t_upd in pipe.execute():
            if url and state and text(state) not in TERMINAL:
                out.append((text(url), text(state), now - float(t_upd or now)))
        return out

    def add_dead(self, url: str) -> None:
        """Put ``url`` on the dead list, which keeps the URLs given up in the retention."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.dead_key, {url: now})
        pipe.zremrangebyscore(self.dead_key, "-inf", now - self.retention)
        pipe.expire(self.dead_key, self.retention)
        pipe.execute()

    def dead(self) -> list[str]:
        """The URLs given up as poison in the retention (the store keeps all of them)."""
        now = time.time()
        older: set[bytes] = self.redis.smembers(self.old_dead_key)  # type: ignore[assignment]
        if older:  # one move from the unbounded set of before: their time is unknown
            self.redis.zadd(self.dead_key, dict.fromkeys(older, now), nx=True)
            self.redis.expire(self.dead_key, self.retention)
            self.redis.delete(self.old_dead_key)
        self.redis.zremrangebyscore(self.dead_key, "-inf", now - self.retention)
        urls: list[bytes] = self.redis.zrange(self.dead_key, 0, -1)  # type: ignore[assignment]
        return sorted(text(u) for u in urls)

    def remove_dead(self, url: str) -> None:
        self.redis.zrem(self.dead_key, url)
        self.redis.srem(self.old_dead_key, url)
