"""``newsq worker``: a Celery worker for some queues, with newsq's start-up."""

from __future__ import annotations

import logging
import os
import tempfile

from config.celery import QUEUES
from config.settings import Settings
from newsq.errors import ConfigError
from workers.logs import setup_logging

log = logging.getLogger(__name__)


def start_metrics_server(port: int) -> None:
    """Serve the summed metrics of this worker and its pool children on ``port``.

    prometheus-client's multiprocess mode is chosen when the module is imported, so
    the directory is set before anything imports it.
    """
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="newsq-metrics-"))
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    log.info("metrics on http://127.0.0.1:%d/metrics", port)


def run_worker(settings: Settings, queues: str, concurrency: int | None,
               pool: str | None) -> int:  # fmt: skip
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise ConfigError(f"--queues: unknown queue(s) {unknown or names}; use {','.join(QUEUES)}")
    pool = pool or ("threads" if names == ["fetch"] else "prefork")
    concurrency = concurrency or (16 if pool == "threads" else os.cpu_count() or 2)
    setup_logging(settings.log_level, settings.log_format)
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port)
    from config.celery import app

    argv = [
        "worker",
        "--queues", ",".join(names),
        "--pool", pool,
        "--concurrency", str(concurrency),
        "--hostname", f"newsq-{'-'.join(names)}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel", settings.log_level,
    ]  # fmt: skip
    app.worker_main(argv)
    return 0
