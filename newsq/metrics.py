"""Prometheus metrics of one worker process.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the worker sets it when ``NEWSQ_METRICS_PORT``
is given, before anything imports prometheus-client), every prefork child writes its
samples there and the worker's metrics server sums them: one scrape shows the whole
worker. What is exported:

  newsq_urls_total{state,reason}            URLs that reached a terminal state
  newsq_stage_seconds{stage}                 fetch / clean / dedup / store latency
  newsq_throttled_total{host}                fetches postponed by per-host politeness
  newsq_extracted_total{site}                pages cleaned (articles and empty pages)
  newsq_extract_missing_total{site,field}    of those, pages without text, title or date
  newsq_queue_depth{queue,lane}              messages waiting in a queue's lane, fresh or bulk
                                             (scrape time; sum by queue for the queue's)
  newsq_ledger_urls{state}                   URLs by state, cluster-wide (scrape time)
  newsq_dedup_ratio                          duplicates / (stored + duplicates), cluster-wide

Per-site extraction health is ``missing / extracted``: a site whose template changed
shows a jump in its share of pages without text or title. Host and site labels are
bounded: each process gives its own label to the first ``max_labels`` hosts it sees
and counts the rest under ``other``, so a crawl of a million hosts cannot blow up the
time-series database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from newsq.records import STATES, Article, Drop

if TYPE_CHECKING:
    import redis

OTHER = "other"
DEFAULT_MAX_LABELS = 50

URLS = Counter("newsq_urls_total", "URLs that reached a terminal state", ["state", "reason"])
STAGE_SECONDS = Histogram(
    "newsq_stage_seconds",
    "Time spent in each pipeline stage",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
THROTTLED = Counter("newsq_throttled_total", "Fetches postponed by per-host politeness", ["host"])
EXTRACTED = Counter("newsq_extracted_total", "Pages cleaned, per site", ["site"])
MISSING = Counter(
    "newsq_extract_missing_total",
    "Cleaned pages lacking a field (text, title, published), per site",
    ["site", "field"],
)


class BoundedLabels:
    """The first ``limit`` distinct values keep their name; later ones become ``other``."""

    def __init__(self, limit: int = DEFAULT_MAX_LABELS) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


class Metrics:
    """The handful of calls the pipeline makes; label sets kept small and bounded."""

    def __init__(self, max_labels: int = DEFAULT_MAX_LABELS) -> None:
        self.hosts = BoundedLabels(max_labels)
        self.sites = BoundedLabels(max_labels)

    def outcome(self, state: str, reason: str | None) -> None:
        """Count a URL reaching a terminal state in this process (the shared time series
        of :mod:`newsq.throughput` is written by the ledger's move)."""
        URLS.labels(state=state, reason=reason or "").inc()

    def stage_time(self, stage: str, seconds: float) -> None:
        STAGE_SECONDS.labels(stage=stage).observe(seconds)

    def throttled(self, host: str) -> None:
        THROTTLED.labels(host=self.hosts(host)).inc()

    def extraction(self, site: str, result: Article | Drop) -> None:
        """Count one cleaned page of ``site``; a Drop counts as a page without text."""
        site = self.sites(site or "?")
        EXTRACTED.labels(site=site).inc()
        if isinstance(result, Drop):
            MISSING.labels(site=site, field="text").inc()
            return
        for field in ("title", "published"):
            if not getattr(result, field):
                MISSING.labels(site=site, field=field).inc()


class RedisStateCollector(Collector):
    """Gauges read from Redis at scrape time: queue depths, URL states, dedup ratio.

    Queue depth is the length of the broker's list; tasks a worker has reserved but
    not yet acknowledged are not in it (see the KEDA notes in the README). The state
    gauges are cluster-wide: every worker reports the same values, so aggregate them
    with ``max``, not ``sum``. A Redis error yields no samples rather than a failed
    scrape.
    """

    def __init__(self, client: redis.Redis, key_prefix: str, queues: Sequence[str],
                 broker: redis.Redis | None = None) -> None:  # fmt: skip
        """``client``: the shared state's Redis; ``broker``: the broker's, when not that one."""
        self.client = client
        self.broker = broker or client
        self.key_prefix = key_prefix
        self.queues = tuple(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import redis

        from newsq.config.celery import queue_depths
        from newsq.ledger import read_counts

        try:
            depths = queue_depths(self.broker, self.key_prefix, self.queues)
            counts = read_counts(self.client, self.key_prefix)
        except redis.RedisError:
            return
        depth = GaugeMetricFamily(
            "newsq_queue_depth", "Messages waiting in a broker queue's lane (fresh, bulk)",
            labels=["queue", "lane"],
        )  # fmt: skip
        for queue, lanes in depths.items():
            for lane, n in lanes.items():
                depth.add_metric([queue, lane], float(n))
        yield depth
        states = GaugeMetricFamily(
            "newsq_ledger_urls", "URLs by state in the ledger (cluster-wide)", labels=["state"]
        )
        for state in STATES:
            states.add_metric([state], float(counts.get(state, 0)))
        yield states
        yield GaugeMetricFamily(
            "newsq_dedup_ratio",
            "Share of processed articles that were duplicates (cluster-wide)",
            value=dedup_ratio(counts),
        )


def dedup_ratio(counts: dict[str, int]) -> float:
    """duplicates / (stored + duplicates); 0.0 before anything was processed."""
    done = counts.get("stored", 0) + counts.get("duplicate", 0)
    return counts.get("duplicate", 0) / done if done else 0.0


def metric_names() -> Iterable[str]:
    """The names this module exports (for the dashboard test)."""
    return (
        "newsq_urls_total", "newsq_stage_seconds", "newsq_throttled_total",
        "newsq_extracted_total", "newsq_extract_missing_total", "newsq_queue_depth",
        "newsq_ledger_urls", "newsq_dedup_ratio",
    )  # fmt: skip
