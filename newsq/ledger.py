"""The URL ledger: every enqueued URL's state, shared by all workers in Redis.

One hash per URL (state, reason, attempts, deliveries, story, timings) plus a counter
per state and a sorted set of URLs not yet in a terminal state (by last update), so
``newsq status`` answers at once and stuck URLs can be found; and the dead list, the
URLs given up as poison within the retention. Every state change is one Lua call, so
the counters never drift from the hashes and concurrent enqueuers agree on which URLs
are new.

The ledger is split in :data:`BUCKETS` buckets by a hash of the URL, each with its own
counters and active set under its own hash tag (``{prefix:l:<bucket>}``), so a URL's
Lua call names keys of one slot and on a Redis Cluster the ledger spreads over the
shards: the buckets' tags are picked so they lie evenly across the slot space (a
cluster's masters hold ranges of it). Reading the counts sums the buckets, in one round
trip; an enqueue sends one call per bucket, in one round trip per server.

The ledger is the live view: a URL's hash lives while the URL is in flight and for the
retention (``NEWSQ_LEDGER_RETENTION_DAYS``) after it reached a terminal state, then
expires. The store's ``urls`` table keeps each terminal outcome for good, so
:meth:`Ledger.enqueue` asks it (``recorded``) about the URLs it found no entry for:
a URL known to the store is not sent again after its entry expired.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from newsq.connections import run_script
from newsq.records import STATES, TERMINAL
from newsq.replies import text
from newsq.throughput import Recorder
from newsq.urls import url_id

_SCRIPT = (resources.files("newsq") / "ledger.lua").read_text()
RETENTION_DAYS = 7.0
"""How long a terminal URL's entry is kept by default (``NEWSQ_LEDGER_RETENTION_DAYS``)."""

Recorded = Callable[[Sequence[str]], set[str]]
"""``recorded(urls)``: those of ``urls`` the store holds a terminal record of."""


BUCKETS = 12
"""Ledger buckets: 12 lie evenly on 2, 3, 4, 6 or 12 masters that split the slots evenly."""


def bucket_tags(prefix: str, buckets: int = BUCKETS) -> tuple[str, ...]:
    """Each bucket's hash tag, ``{prefix:l:<b>}`` or ``{prefix:l:<b>.<n>}``: the first
    whose slot lies in the b-th of ``buckets`` equal parts of the slot space."""
    width = REDIS_CLUSTER_HASH_SLOTS / buckets
    tags = []
    for b in range(buckets):
        for n in range(100_000):  # about `buckets` tries each
            tag = f"{prefix}:l:{b}" + (f".{n}" if n else "")
            if int(key_slot(tag.encode()) // width) == b:
                tags.append(f"{{{tag}}}")
                break
    return tuple(tags)


@dataclass(frozen=True)
class Bucket:
    """One bucket's keys: its URLs' entries begin with ``tag``."""

    tag: str

    @property
    def counts(self) -> str:
        return f"{self.tag}:counts"

    @property
    def active(self) -> str:
        return f"{self.tag}:active"

    @property
    def reasons(self) -> str:
        return f"{self.tag}:reasons"


@cache
def buckets_of(prefix: str) -> tuple[Bucket, ...]:
    return tuple(Bucket(tag) for tag in bucket_tags(prefix))


def _summed(replies: Iterable[Mapping[bytes, bytes]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for reply in replies:
        for name, value in reply.items():
            out[text(name)] += int(value)
    return out


def _per_state(fields: Mapping[str, int]) -> Counter[str]:
    """URLs per state from a counts hash: a state's field (entries made in it, and all
    counts written before moves were counted apart) plus the ``old>new`` moves into it,
    less those out of it (ledger.lua's count_move)."""
    out: Counter[str] = Counter()
    for name, n in fields.items():
        old, arrow, new = name.partition(">")
        if arrow:
            out[new] += n
            out[old] -= n
        else:
            out[name] += n
    return out


def read_counts(client: redis.Redis, prefix: str) -> dict[str, int]:
    """URLs per state in the ledger of ``prefix``, every bucket summed (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for bucket in buckets_of(prefix):
        pipe.hgetall(bucket.counts)
    counts = _per_state(_summed(pipe.execute()))
    return {s: counts.get(s, 0) for s in STATES}


def entry_pattern(prefix: str) -> str:
    """A SCAN pattern of every URL entry in ``prefix``'s ledger."""
    return f"{{{prefix}:l:*}}:url:*"


def expiry_seconds(days: float) -> int:
    """``days`` as the whole seconds an EXPIRE takes: rounded up, at least 1."""
    return max(1, math.ceil(days * 86400))


class Ledger:
    """Atomic URL state transitions in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, *,
                 retention_days: float = RETENTION_DAYS) -> None:  # fmt: skip
        self.redis = client
        self.retention = expiry_seconds(retention_days)
        self.prefix = prefix
        self.tag = f"{{{prefix}}}"  # the dead list's and the throughput series'
        self.buckets = buckets_of(prefix)
        self.dead_key = f"{self.tag}:dead:since"
        self.old_dead_key = f"{self.tag}:dead"  # a set, before the dead list was bounded
        self.script = client.register_script(_SCRIPT)
        self.throughput = Recorder(client, self.tag)  # this process's terminal outcomes

    def bucket(self, url: str) -> Bucket:
        return self._bucket_of(url_id(url))

    def _bucket_of(self, ident: str) -> Bucket:
        return self.buckets[int(ident[:8], 16) % len(self.buckets)]

    def key(self, url: str) -> str:
        ident = url_id(url)
        return f"{self._bucket_of(ident).tag}:url:{ident}"

    def _by_bucket(self, urls: Iterable[str]) -> dict[Bucket, list[str]]:
        out: dict[Bucket, list[str]] = defaultdict(list)
        for url in urls:
            out[self.bucket(url)].append(url)
        return out

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
            groups = self._by_bucket(dict.fromkeys(chunk))  # a URL twice: claimed once
            replies = self._call(groups, "enqueue", stamp, with_urls=True)
            new = {u for group, flags in zip(groups.values(), replies, strict=True)
                   for u, flag in zip(group, flags, strict=True) if flag}  # fmt: skip
            claimed = [u for u in chunk if u in new]
            known = recorded(claimed) if recorded is not None and claimed else set()
            if known:
                self._call(self._by_bucket(known), "unclaim", stamp, with_urls=False)
            first = {u: j for j, u in reversed(list(enumerate(chunk)))}
            out.extend(u in new and u not in known and first[u] == j for j, u in enumerate(chunk))
        return out

    def _call(self, groups: Mapping[Bucket, Sequence[str]], command: str, stamp: str, *,
              with_urls: bool) -> list[Any]:  # fmt: skip
        """``command`` on each bucket's URLs: one call per bucket, one round trip."""
        calls = [([b.counts, b.active, *(self.key(u) for u in group)],
                  [command, stamp, *(group if with_urls else ())])
                 for b, group in groups.items()]  # fmt: skip
        return run_script(self.redis, self.script, calls)

    def begin(self, url: str, state: str) -> tuple[str | None, int]:
        """A worker takes ``url``: returns (previous state, deliveries so far).

        A URL already in a terminal state is left as it is and returned with 0
        deliveries: the caller skips the work (a duplicate delivery).
        """
        bucket = self.bucket(url)
        old, deliveries = self.script(
            keys=[self.key(url), bucket.counts, bucket.active],
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
        bucket = self.bucket(url)
        keys = [self.key(url), bucket.counts, bucket.active, bucket.reasons]
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
        calls = [([self.key(url)], ["note", *(item for pair in values.items() for item in pair)])
                 for url, values in fields.items() if values]  # fmt: skip
        run_script(self.redis, self.script, calls)

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

    def active_at(self, keys: Sequence[str]) -> list[bool]:
        """Whether each URL whose ledger key is in ``keys`` is in its bucket's active set
        (not terminal, or never ended since its retry): a command per bucket (ZMSCORE),
        not one per URL. A URL not active has ended, or has no entry at all."""
        by_bucket: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            by_bucket[key.rpartition(":url:")[0]].append(i)
        pipe = self.redis.pipeline(transaction=False)
        for tag, where in by_bucket.items():
            pipe.zmscore(Bucket(tag).active, [keys[i] for i in where])
        out = [False] * len(keys)
        for where, scores in zip(by_bucket.values(), pipe.execute(), strict=True):
            for i, score in zip(where, scores, strict=True):
                out[i] = score is not None
        return out

    def counts(self) -> dict[str, int]:
        return read_counts(self.redis, self.prefix)

    def ended(self) -> int:
        """Terminal outcomes so far, of every URL (a command per bucket, one round
        trip): a waiter reads the states of its URLs again only once enough of them may
        have ended."""
        counts = read_counts(self.redis, self.prefix)
        return sum(counts[state] for state in TERMINAL)

    def reasons(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for bucket in self.buckets:
            pipe.hgetall(bucket.reasons)
        return {k: n for k, n in sorted(_summed(pipe.execute()).items()) if n}

    def unfinished(self) -> int:
        """How many URLs are not terminal (the active sets' sizes)."""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in self.buckets:
            pipe.zcard(bucket.active)
        return sum(int(n) for n in pipe.execute())

    def stuck(self, older_than: float, limit: int = 100) -> list[tuple[str, str, float]]:
        """Non-terminal URLs not updated for ``older_than`` seconds: (url, state, age),
        the longest waiting first."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for bucket in self.buckets:
            pipe.zrangebyscore(bucket.active, 0, now - older_than, 0, limit, withscores=True)
        found = sorted((score, key) for rows in pipe.execute() for key, score in rows)
        keys = [key for _, key in found[:limit]]
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
