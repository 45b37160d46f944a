"""What ``newsq stats`` shows, gathered in one place: a :class:`Snapshot`.

Live numbers come from Redis (queue lengths, the messages workers hold unacknowledged,
the ledger's counters, the throughput time series of :mod:`newsq.throughput`); the
slower ones from the store (failing hosts among recent failures, the stories with most
copies), which a live view refreshes less often (:class:`StatsSource`).
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa

from newsq.backfill.progress import JobView, Progress
from newsq.config.celery import FETCH_QUEUE, QUEUES, queue_depths
from newsq.fetch import frontier
from newsq.fetch.politeness import fetch_tag
from newsq.ledger import Ledger
from newsq.metrics import dedup_ratio
from newsq.store import cursors
from newsq.store.cursors import Cursor
from newsq.store.database import Store, articles, urls
from newsq.throughput import Throughput
from newsq.urls import host_of

RECENT_FAILURES = 5000
STORY_ROWS = 5
RESERVED_READ = 5000  # unacked messages parsed per refresh; a sample beyond that


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh of ``newsq stats`` prints."""

    queues: dict[str, dict[str, int]]
    """Messages waiting in each broker queue, by lane (``fresh``, ``bulk``)."""
    states: dict[str, int]
    rates: dict[str, float]
    dedup_ratio: float
    reasons: dict[str, int]
    failing_hosts: list[tuple[str, int]] = field(default_factory=list)
    stories: list[SharedStory] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)
    reserved: dict[str, int] = field(default_factory=dict)
    """Messages taken by workers and not acknowledged yet, per queue."""
    throttle: Throttle | None = None
    webhooks: list[Cursor] = field(default_factory=list)
    """Each webhook target's delivery: events taken, pending, its last error."""
    backfills: list[JobView] = field(default_factory=list)
    """The ``newsq backfill`` jobs given last, running or finished."""


@dataclass(frozen=True)
class Throttle:
    """URLs waiting for their host's turn (in the frontier, or held by workers as
    countdown tasks of before it): the per-host rate caps the speed."""

    waiting: int
    hosts: int
    host_rate: float


@dataclass(frozen=True)
class Reserved:
    """Messages workers have taken and not acknowledged yet (running, prefetched, or
    held until a countdown: a retry, or a fetch put off until its host's turn)."""

    queues: dict[str, int]
    held_hosts: Counter[str] = field(default_factory=Counter)
    """Fetches held until later, by the host of their URL."""


def reserved(client: redis.Redis, key_prefix: str, now: float | None = None,
             limit: int = RESERVED_READ) -> Reserved:  # fmt: skip
    """Read Celery's ``unacked`` hash (kombu's Redis transport keeps every taken message
    there until it is acknowledged); past ``limit`` messages, counts are scaled up."""
    now = time.time() if now is None else now
    key = f"{key_prefix}:q:unacked"
    total = int(client.hlen(key))
    queues, held, read = dict.fromkeys(QUEUES, 0), Counter[str](), 0
    for _, raw in client.hscan_iter(key, count=500):
        if read >= limit:
            break
        read += 1
        queue, eta, url = _unacked(raw)
        if queue in queues:
            queues[queue] += 1
        if queue == FETCH_QUEUE and eta is not None and eta > now and url:
            held[host_of(url) or "?"] += 1
    if read and read < total:  # a sample: scale it to the whole
        scale = total / read
        queues = {q: round(n * scale) for q, n in queues.items()}
        held = Counter({h: round(n * scale) for h, n in held.items()})
    return Reserved(queues, held)


def _unacked(raw: bytes | str) -> tuple[str | None, float | None, str | None]:
    """(queue, ETA as epoch seconds, first URL) of one unacked entry; Nones if unreadable."""
    try:
        message, _, routing_key = json.loads(raw)
        headers = message.get("headers") or {}
        eta = headers.get("eta")
        when = datetime.fromisoformat(eta).timestamp() if eta else None
        args = json.loads(base64.b64decode(message["body"]))[0]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None, None, None
    first = args[0] if args else None
    url = first[0] if isinstance(first, list) and first else first
    return routing_key, when, url if isinstance(url, str) else None


def throttled_hosts(client: redis.Redis, key_prefix: str, hosts: list[str]) -> set[str]:
    """The ``hosts`` whose politeness bucket is running now (their next turn is set)."""
    pipe = client.pipeline(transaction=False)
    for host in hosts:
        pipe.exists(f"{fetch_tag(key_prefix)}:polite:next:{host.lower()}")
    return {h for h, live in zip(hosts, pipe.execute(), strict=True) if live}


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


@dataclass(frozen=True)
class SharedStory:
    """A story stored more than once: its ``copies`` (article rows, one per URL that
    carried it) and the outlets they came from, with how many copies each."""

    story_id: str
    title: str | None
    copies: int
    outlets: list[tuple[str, int]]


def shared_stories(store: Store, limit: int, names: Mapping[str, str] | None = None
                   ) -> tuple[list[SharedStory], int]:  # fmt: skip
    """The ``limit`` stories with most copies (two or more), and how many such stories
    the store holds. An outlet is named by ``names`` (``host:port`` → name) when it
    has the URL's, else by the article's ``site``, else by the URL's host."""
    top = [s for s in store.stories(limit=limit) if s["copies"] > 1]
    shared = (
        sa.select(articles.c.story_id)
        .group_by(articles.c.story_id)
        .having(sa.func.count() > 1)
        .subquery()
    )
    wanted = [url for story in top for url in story["urls"]]
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(shared)).scalar_one()
        sites = dict(conn.execute(sa.select(articles.c.url, articles.c.site)
                                  .where(articles.c.url.in_(wanted))).all())  # fmt: skip
    out = []
    for story in top:
        outlets = Counter(_outlet(url, sites.get(url), names or {}) for url in story["urls"])
        ranked = sorted(outlets.items(), key=lambda kv: (-kv[1], kv[0].lower()))
        out.append(SharedStory(story["story_id"], story["title"], story["copies"], ranked))
    return out, int(total)


def _outlet(url: str, site: str | None, names: Mapping[str, str]) -> str:
    netloc = urlsplit(url).netloc.lower()
    return names.get(netloc) or site or host_of(url) or "?"


class StatsSource:
    """Builds snapshots; store queries are repeated only every ``slow_every`` seconds."""

    def __init__(self, client: redis.Redis, key_prefix: str, store: Store,
                 slow_every: float = 15.0, host_rate: float = 0.0,
                 broker: redis.Redis | None = None) -> None:  # fmt: skip
        """``client``: the shared state's Redis; ``broker``: the broker's, when not that one."""
        self.client = client
        self.broker = broker or client
        self.host_rate = host_rate
        self.key_prefix = key_prefix
        self.ledger = Ledger(client, key_prefix)
        self.throughput = Throughput(lambda: client, key_prefix)
        self.store = store
        self.slow_every = slow_every
        self._slow: tuple[float, list[tuple[str, int]], list[SharedStory]] | None = None

    def snapshot(self) -> Snapshot:
        states = self.ledger.counts()
        now = time.monotonic()
        if self._slow is None or now - self._slow[0] >= self.slow_every:
            stories, _ = shared_stories(self.store, STORY_ROWS)
            self._slow = (now, failing_hosts(self.store), stories)
        taken = reserved(self.broker, self.key_prefix)
        throttle = None
        parked = frontier.waiting(self.client, self.key_prefix)  # waiting for their host
        if taken.held_hosts or parked:
            hosts = throttled_hosts(self.client, self.key_prefix, sorted(taken.held_hosts))
            waiting = sum(taken.held_hosts[h] for h in hosts) + sum(parked.values())
            if waiting:
                throttle = Throttle(waiting, len(hosts | set(parked)), self.host_rate)
        return Snapshot(
            queues=queue_depths(self.broker, self.key_prefix),
            reserved=taken.queues,
            throttle=throttle,
            states=states,
            rates=self.throughput.rates(60.0),
            dedup_ratio=dedup_ratio(states),
            reasons=self.ledger.reasons(),
            failing_hosts=self._slow[1],
            stories=self._slow[2],
            webhooks=cursors.every(self.store),
            backfills=Progress(self.client, self.key_prefix).jobs(),
        )
