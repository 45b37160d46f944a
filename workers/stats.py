"""What ``newsq stats`` shows, gathered in one place: a :class:`Snapshot`.

Live numbers come from Redis (queue lengths, the ledger's counters, the throughput
time series of :mod:`newsq.throughput`); the slower ones from the store (failing
hosts among recent failures, the stories with most copies), which a live view
refreshes less often (:class:`StatsSource`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
import sqlalchemy as sa

from newsq.config.celery import QUEUES
from newsq.ledger import Ledger
from newsq.metrics import dedup_ratio
from newsq.store.database import Store, urls
from newsq.throughput import Throughput
from newsq.urls import host_of

RECENT_FAILURES = 5000


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh of ``newsq stats`` prints."""

    queues: dict[str, int]
    states: dict[str, int]
    rates: dict[str, float]
    dedup_ratio: float
    reasons: dict[str, int]
    failing_hosts: list[tuple[str, int]] = field(default_factory=list)
    stories: list[dict[str, Any]] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)


def queue_depths(client: redis.Redis, key_prefix: str) -> dict[str, int]:
    """Messages waiting in each broker queue (reserved, unacked tasks are not counted)."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(f"{key_prefix}:q:{queue}")
    return {q: int(n) for q, n in zip(QUEUES, pipe.execute(), strict=True)}


def failing_hosts(store: Store, limit: int = 5) -> list[tuple[str, int]]:
    """Hosts with most ``failed`` URLs among the last few thousand failures."""
    query = (
        sa.select(urls.c.url)
        .where(urls.c.state == "failed")
        .order_by(urls.c.updated_at.desc())
        .limit(RECENT_FAILURES)
    )
    with store.engine.connect() as conn:
        hosts = Counter(host_of(url) or "?" for (url,) in conn.execute(query))
    return sorted(hosts.items(), key=lambda item: (-item[1], item[0]))[:limit]


class StatsSource:
    """Builds snapshots; store queries are repeated only every ``slow_every`` seconds."""

    def __init__(self, client: redis.Redis, key_prefix: str, store: Store,
                 slow_every: float = 15.0) -> None:  # fmt: skip
        self.client = client
        self.key_prefix = key_prefix
        self.ledger = Ledger(client, key_prefix)
        self.throughput = Throughput(lambda: client, key_prefix)
        self.store = store
        self.slow_every = slow_every
        self._slow: tuple[float, list[tuple[str, int]], list[dict[str, Any]]] | None = None

    def snapshot(self) -> Snapshot:
        states = self.ledger.counts()
        now = time.monotonic()
        if self._slow is None or now - self._slow[0] >= self.slow_every:
            stories = [s for s in self.store.stories(limit=5) if s["copies"] > 1]
            self._slow = (now, failing_hosts(self.store), stories)
        return Snapshot(
            queues=queue_depths(self.client, self.key_prefix),
            states=states,
            rates=self.throughput.rates(60.0),
            dedup_ratio=dedup_ratio(states),
            reasons=self.ledger.reasons(),
            failing_hosts=self._slow[1],
            stories=self._slow[2],
        )
