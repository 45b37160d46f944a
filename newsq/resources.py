"""Resources of one worker process, made once and handed to the pipeline's steps.

The HTTP client, the Redis pools (the shared state's and the broker's), the database
engine and the Lua scripts are built on first use (in a prefork child, after the fork)
and reused by every task the process runs; all of them are safe to share between the
threads of a thread pool. What the pool running the tasks does for them is a
:class:`Pool`, handed over by the pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import redis

from newsq.config.settings import Settings
from newsq.connections import broker_redis, state_redis
from newsq.ledger import Ledger
from newsq.metrics import Metrics
from newsq.records import Article, Drop
from newsq.store.database import Store

if TYPE_CHECKING:
    from newsq.clean.boilerplate import BoilerplateFilter
    from newsq.dedup.index import DedupIndex
    from newsq.fetch.client import Fetcher
    from newsq.fetch.frontier import Frontier
    from newsq.fetch.politeness import Politeness
    from newsq.fetch.robots import RobotsCache, Verdict
    from newsq.workers.admission import CpuLane

log = logging.getLogger(__name__)
T = TypeVar("T")
SideBySide = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


class Pool(Protocol):
    """What the pool running a process's tasks does for them: newsq's thread pool
    (:class:`newsq.workers.pool.TaskPool`) hands itself to the runtime as it starts."""

    @property
    def lane(self) -> CpuLane | None:
        """The one thread for the CPU-heavy part of every task, if the pool has one."""

    @property
    def side_by_side(self) -> SideBySide | None:
        """``[fn(item) for item in items]``, each item a task of the pool, if it can."""

    def network_wait(self) -> AbstractContextManager[None]:
        """Wraps a request: the pool may start another task while it waits."""


class AnyPool:
    """Any other pool (prefork, solo, Celery's threads): it does nothing for its tasks."""

    lane = None
    side_by_side = None

    def network_wait(self) -> AbstractContextManager[None]:
        return nullcontext()


class Runtime:
    """Lazily built, process-wide resources for the pipeline."""

    def __init__(self, settings: Settings) -> None:
        if not settings.broker_url:
            raise ValueError("a worker needs NEWSQ_BROKER_URL")
        self.settings = settings
        self.metrics = Metrics()
        self.pool: Pool = AnyPool()  # until newsq's thread pool hands itself over
        self._lock = threading.RLock()
        # one extraction at a time per process: with the GIL, more would only interleave,
        # each holding its parsed trees (tens of MB) and each finishing later
        self._extracting = threading.Lock()
        self._made: dict[str, Any] = {}

    def _get(self, name: str, build: Callable[[], Any]) -> Any:
        made = self._made.get(name)
        if made is None:
            with self._lock:  # threads of a thread pool share one of each
                made = self._made.get(name)
                if made is None:
                    made = self._made[name] = build()
        return made

    @property
    def broker(self) -> redis.Redis:
        """The broker's Redis, for reading Celery's keys (queue lengths)."""
        return self._get("broker", lambda: broker_redis(self.settings, health_check_interval=30))

    @property
    def redis(self) -> redis.Redis:
        """The shared state's Redis (``NEWSQ_STATE_URL``, by default the broker's)."""
        return self._get("redis", lambda: state_redis(self.settings, health_check_interval=30))

    @property
    def ledger(self) -> Ledger:
        retention = self.settings.ledger_retention_days
        return self._get("ledger", lambda: Ledger(self.redis, self.settings.key_prefix,
                                                  retention_days=retention))  # fmt: skip

    @property
    def store(self) -> Store:
        return self._get("store", lambda: Store.from_url(self.settings.database_url))

    @property
    def fetcher(self) -> Fetcher:
        from newsq.fetch.client import Fetcher

        return self._get("fetcher", lambda: Fetcher(self.settings))

    @property
    def politeness(self) -> Politeness:
        from newsq.fetch.politeness import Politeness

        return self._get("politeness", lambda: Politeness(self.redis, self.settings))

    @property
    def frontier(self) -> Frontier:
        from newsq.fetch.frontier import Frontier

        return self._get("frontier", lambda: Frontier(self.redis, self.politeness))

    @property
    def robots(self) -> RobotsCache:
        from newsq.fetch.robots import RobotsCache

        return self._get("robots", lambda: RobotsCache(self.redis, self.settings, self.fetcher))

    def robots_fetch_needed(self, url: str) -> bool:
        """Whether robots.txt's answer for ``url`` takes a request (see ``robots_verdict``)."""
        return self.settings.robots and not self.robots.cached(url)

    def robots_verdict(self, url: str) -> Verdict:
        """robots.txt's answer for ``url`` (allowed when ``NEWSQ_ROBOTS=0``)."""
        from newsq.fetch.robots import ALLOWED

        return self.robots.check(url) if self.settings.robots else ALLOWED

    @property
    def dedup(self) -> DedupIndex:
        from newsq.dedup.index import DedupIndex

        return self._get("dedup", lambda: DedupIndex(self.redis, self.settings))

    @property
    def boilerplate(self) -> BoilerplateFilter:
        from newsq.clean.boilerplate import BoilerplateFilter

        return self._get("boilerplate", lambda: BoilerplateFilter(self.redis, self.settings))

    def extract(self, html: str, url: str) -> Article | Drop:
        """The clean stage on ``html``; threads of one process take turns."""
        from newsq.clean.extract import extract
        from newsq.clean.limits import CleanLimits
        from newsq.sites import rule_for

        site = rule_for(self.settings.sites_file, url)
        with self._extracting:
            return extract(html, url, CleanLimits.from_settings(self.settings), site)

    def on_cpu(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the CPU lane of the process's pool when it has one (newsq's
        thread pool), else here."""
        lane = self.pool.lane
        return lane.run(fn, *args) if lane is not None else fn(*args)

    def warm_up(self) -> None:
        """Make every resource now and run one small page through the clean stage (on
        the CPU lane), so the first task does not pay for it: the database engine and
        schema check, the HTTP client and its TLS context, the Lua scripts, the dedup
        filter and lxml's per-thread state cost CPU that would otherwise fall inside the
        first busy seconds of a surge.

        Raises what a resource raises (Redis or the database unreachable): the caller
        logs it and the tasks build what is missing, and retry, as before.
        """
        self.redis.ping()
        names = ["ledger", "store", "fetcher", "politeness", "frontier", "dedup", "boilerplate"]
        for name in names + (["robots"] if self.settings.robots else []):
            getattr(self, name)
        self.on_cpu(_warm_clean, self)

    def close(self) -> None:
        """Release what was made: HTTP connections, database pool, Redis pool."""
        ledger = self._made.get("ledger")
        if ledger is not None:  # its outcomes not in the series yet, while Redis is open
            ledger.flush()
        for name in ("fetcher", "store", "redis", "broker"):
            resource = self._made.pop(name, None)
            if resource is not None:
                resource.close()


def _warm_clean(rt: Runtime) -> None:
    from newsq.clean.extract import WARM_PAGE

    article = rt.extract(WARM_PAGE, "https://warm-up.invalid/")
    rt.dedup.sketch(article.text if isinstance(article, Article) else WARM_PAGE)
