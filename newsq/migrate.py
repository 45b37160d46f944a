"""The Redis keys of before moved to today's layout, once, at a worker's start.

Commits 3792093 and 0efc6b9 renamed the shared state for Redis Cluster: the ledger of
``{prefix}:url:<id>`` and ``{prefix}:counts|active|reasons`` went to 12 buckets
(:mod:`newsq.ledger`), the frontier and politeness of ``prefix:frontier:*`` and
``prefix:polite:*`` to ``{prefix:fetch}:...`` (:mod:`newsq.fetch.frontier`). Keys of
before are not read, so :func:`upgrade` moves them: every URL entry to its bucket
(written there, then deleted: on a cluster the old keys' one slot is not the bucket's),
counted in its bucket, with the old counters' rest (entries that expired) added once;
the frontier's URLs (and those a dispatcher took and may not have sent) into today's
queues; the politeness keys renamed. Each step can run again after a crash and changes
nothing twice; a lock makes workers that start together wait for the one that moves.

It expects the workers of before stopped: what one writes after the move is moved by
the next worker's start (the old keys are looked for at every start, one round trip).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from importlib import resources

import redis

from newsq.connections import is_cluster, run_script
from newsq.fetch.politeness import fetch_tag
from newsq.ledger import Ledger, buckets_of
from newsq.records import TERMINAL
from newsq.replies import text

log = logging.getLogger(__name__)

_SCRIPT = (resources.files("newsq") / "migrate.lua").read_text()
LOCK_MS = 120_000
"""The lock's life without renewal (each batch renews it; a SCAN of a large keyspace
finds nothing for a while): a mover that dies frees it that long after."""
LAYOUT = "2"
"""The layout a fully moved state is marked with (``{prefix}:layout``)."""

CARRY_MARK_SECONDS = 3600
"""How long the mark of the old counters' rest, added to bucket 0, may outlive a crash."""

# the order old fetch keys move in: a host's queues before its schedule, so a crash
# between never leaves a host scheduled with nothing queued; other names: a queue
_RANKS = {"frontier:pending": 1, "frontier:hosts": 3, "frontier:due": 4,
          "frontier:dispatcher": 5}  # fmt: skip


def _rank(name: str) -> int:
    return _RANKS.get(name, 2 if name.startswith("polite:") else 0)


@dataclass(frozen=True)
class Moved:
    """What :func:`upgrade` moved."""

    entries: int = 0
    waiting: int = 0
    """URLs of the old frontier's queues, and taken by its dispatcher (pending)"""
    keys: int = 0
    """politeness and frontier keys renamed or merged"""


def _glob(text_: str) -> str:
    """``text_`` matched literally by SCAN's MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text_)


class Upgrade:
    """The move of ``prefix``'s keys of before on ``client``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.old = f"{{{prefix}}}"  # the ledger's one hash tag of before
        self.old_counts, self.old_active = f"{self.old}:counts", f"{self.old}:active"
        self.old_reasons = f"{self.old}:reasons"
        self.marker = f"{self.old}:layout"
        self.lock_key = f"{self.old}:migrating"
        self.ledger = Ledger(client, prefix)
        self.script = client.register_script(_SCRIPT)
        self.token = uuid.uuid4().hex

    def needed(self) -> bool:
        """Old keys may be there: the state was never marked moved, or an index key of
        before is there again (a worker of before wrote after the move)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.marker)
        for key in (self.old_counts, self.old_active, f"{self.prefix}:frontier:due",
                    f"{self.prefix}:frontier:pending", f"{self.prefix}:polite:rates"):  # fmt: skip
            pipe.exists(key)
        marker, *found = pipe.execute()
        return marker is None or any(found)

    def _renew(self) -> None:
        self.script(keys=[self.lock_key], args=["renew", self.token, LOCK_MS])

    def move_ledger(self, batch: int = 500) -> int:
        """Every old entry into its bucket; then the old counters' rest. Returns how
        many entries were written."""
        moved = 0
        keys: list[bytes] = []
        for key in self.client.scan_iter(match=f"{_glob(self.old)}:url:*", count=1000):
            keys.append(key)
            if len(keys) >= batch:
                moved += self._move_entries(keys)
                keys = []
        if keys:
            moved += self._move_entries(keys)
        self._carry()
        return moved

    def _move_entries(self, keys: list[bytes]) -> int:
        pipe = self.client.pipeline(transaction=False)  # all on the old tag's one slot
        for key in keys:
            pipe.hgetall(key)
            pipe.pttl(key)
            pipe.zscore(self.old_active, key)
        replies = pipe.execute()
        calls = []
        for i, key in enumerate(keys):
            fields, pttl, score = replies[3 * i : 3 * i + 3]
            if not fields:
                continue  # expired meanwhile
            url = text(fields.get(b"url", b"")) or None
            new_key = self.ledger.key(url) if url else self._key_of_id(text(key))
            bucket = new_key.split("}", 1)[0] + "}"
            pairs = [item for pair in fields.items() for item in pair]
            when = score if score is not None else float(fields.get(b"t_upd", time.time()))
            calls.append(([new_key, f"{bucket}:counts", f"{bucket}:active"],
                          ["adopt", max(int(pttl), 0), repr(when), *pairs]))  # fmt: skip
        adopted = sum(int(r) for r in run_script(self.client, self.script, calls))
        self.script(keys=[self.old_counts, self.old_active, *keys], args=["drop"])
        self._renew()
        return adopted

    def _key_of_id(self, old_key: str) -> str:
        ident = old_key.rsplit(":", 1)[1]
        buckets = buckets_of(self.prefix)
        return f"{buckets[int(ident[:8], 16) % len(buckets)].tag}:url:{ident}"

    def _carry(self) -> None:
        """The old counters hold, beyond the moved entries, the URLs that ended and
        whose entries expired: their terminal counts and every reason go to bucket 0."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.old_counts)
        pipe.hgetall(self.old_reasons)
        counts, reasons = pipe.execute()
        rest = [(text(k), int(v)) for k, v in counts.items() if text(k) in TERMINAL and int(v) > 0]
        why = [(text(k), int(v)) for k, v in reasons.items() if int(v)]
        if rest or why:
            first = buckets_of(self.prefix)[0]
            mark = f"{first.tag}:carried"
            args = ["carry", CARRY_MARK_SECONDS, len(rest),
                    *(x for pair in rest + why for x in pair)]  # fmt: skip
            self.script(keys=[first.counts, first.reasons, mark], args=args)
            self.client.delete(self.old_counts, self.old_reasons, self.old_active)
            self.client.delete(mark)
        else:
            self.client.delete(self.old_counts, self.old_reasons, self.old_active)

    def move_fetch(self) -> tuple[int, int]:
        """The old frontier and politeness keys into today's; returns (URLs, keys).
        Only a single Redis held them (they had no hash tag)."""
        if is_cluster(self.client):
            return 0, 0
        old_base, tag = f"{self.prefix}:", fetch_tag(self.prefix)
        found = []
        for head in ("frontier:*", "polite:*"):
            match = _glob(old_base) + head
            found += [text(k) for k in self.client.scan_iter(match=match, count=1000)]

        urls = keys = 0
        for key in sorted(found, key=lambda k: _rank(k[len(old_base) :])):
            rest = key[len(old_base) :]
            kind = {"frontier:pending": "pending", "frontier:dispatcher": "drop"}.get(rest, "key")
            n = int(self.script(keys=[key, f"{tag}:{rest}"], args=["fetch", kind, tag]))
            if _rank(rest) <= 1:  # a host's queue, or what a dispatcher took
                urls += n
            else:
                keys += 1
        return urls, keys

    def run(self) -> Moved:
        entries = self.move_ledger()
        waiting, keys = self.move_fetch()
        self.client.set(self.marker, LAYOUT)
        return Moved(entries, waiting, keys)


def upgrade(client: redis.Redis, prefix: str, *, wait: float = 120.0) -> Moved | None:
    """Move ``prefix``'s keys of before, if any, once however many workers call it at
    the same time (the others wait up to ``wait`` seconds for the one that moves).
    Returns what this call moved, None when it had nothing to do."""
    job = Upgrade(client, prefix)
    deadline = time.monotonic() + wait
    while job.needed():
        if client.set(job.lock_key, job.token, nx=True, px=LOCK_MS):
            try:
                if not job.needed():  # another finished between the look and the lock
                    return None
                moved = job.run()
            finally:
                job.script(keys=[job.lock_key], args=["unlock", job.token])
            if moved.entries or moved.waiting or moved.keys:
                log.info("newsq: moved the Redis keys of before: %d ledger entries, %d URLs "
                         "waiting in the frontier, %d politeness keys",
                         moved.entries, moved.waiting, moved.keys)  # fmt: skip
            return moved
        if time.monotonic() > deadline:
            log.warning("newsq: another worker still moves the Redis keys of before")
            return None
        time.sleep(0.1)  # another worker moves them: what it moves is seen once done
    return None
