"""Prometheus metrics of one worker process.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the worker sets it when ``NEWSQ_METRICS_PORT``
is given), every prefork child writes its samples there and the worker's metrics
server sums them: one scrape shows the whole worker.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from newsq.records import Article

URLS = Counter("newsq_urls_total", "URLs that reached a terminal state", ["state", "reason"])
STAGE_SECONDS = Histogram(
    "newsq_stage_seconds",
    "Time spent in each pipeline stage",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
THROTTLED = Counter("newsq_throttled_total", "Fetches postponed by per-host politeness", ["host"])
EXTRACTED = Counter(
    "newsq_extracted_total",
    "Pages cleaned per site, and how many lacked a title, date or author",
    ["site", "missing"],
)


class Metrics:
    """The handful of calls the pipeline makes; label sets kept small and bounded."""

    def outcome(self, state: str, reason: str | None) -> None:
        URLS.labels(state=state, reason=reason or "").inc()

    def stage_time(self, stage: str, seconds: float) -> None:
        STAGE_SECONDS.labels(stage=stage).observe(seconds)

    def throttled(self, host: str) -> None:
        THROTTLED.labels(host=host).inc()

    def extraction(self, site: str, article: Article) -> None:
        EXTRACTED.labels(site=site, missing="").inc()
        for name in ("title", "published"):
            if not getattr(article, name):
                EXTRACTED.labels(site=site, missing=name).inc()
