"""``newsq worker``: a Celery worker for some queues, with newsq's start-up."""

from __future__ import annotations

import gc
import logging
import os
import sys
import tempfile
from typing import Any

from newsq.config.celery import QUEUES
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.workers.logs import setup_logging

log = logging.getLogger(__name__)


def start_metrics_server(settings: Settings) -> None:
    """Serve the summed metrics of this worker and its pool children on the metrics port.

    prometheus-client chooses multiprocess mode when it is first imported, so the
    directory is set here, before ``newsq.config.celery`` loads the tasks (which import
    ``newsq.metrics``); a too-early import is an error rather than silently wrong
    numbers. Children that exit are marked dead so their live gauges are dropped.
    """
    if "prometheus_client" in sys.modules and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="newsq-metrics-"))
    import redis
    from celery.signals import worker_process_shutdown
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    from newsq.metrics import RedisStateCollector

    def _child_gone(pid: int | None = None, **_: Any) -> None:
        mark_process_dead(pid or os.getpid())

    worker_process_shutdown.connect(_child_gone, weak=False)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    client = redis.Redis.from_url(settings.broker_url or "", socket_timeout=2)
    registry.register(RedisStateCollector(client, settings.key_prefix, QUEUES))
    port = settings.metrics_port or 0
    try:
        start_http_server(port, addr=settings.metrics_addr, registry=registry)
    except OSError as exc:  # e.g. two workers on one host given the same port
        log.error("metrics server not started on %s:%d: %s", settings.metrics_addr, port, exc)
        return
    log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, port)


# gen0 collections every 50,000 net allocations instead of 700: an extraction makes
# many short-lived objects, and each young collection also walks what survived
GC_THRESHOLD = (50_000, 50, 100)


def _freeze_gc(**_: Any) -> None:
    """Move every object alive now (Celery, kombu, trafilatura, lxml's module state:
    the worker's start-up) to a permanent generation that collections skip. A full
    collection during work then walks ~6 ms of new objects instead of ~65 ms."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def tune_gc_once_started() -> None:
    """Freeze the start-up's objects when the worker is ready (the main process: its
    thread pool, or a prefork pool's parent) and in each prefork child after the fork."""
    from celery.signals import worker_process_init, worker_ready

    worker_ready.connect(_freeze_gc, weak=False)
    worker_process_init.connect(_freeze_gc, weak=False)


def run_worker(settings: Settings, queues: str, concurrency: int | None,
               pool: str | None, *, beat: bool = False) -> int:  # fmt: skip
    """Run a Celery worker until stopped; ``beat`` embeds Celery beat (feed polling ticks)."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise ConfigError(f"--queues: unknown queue(s) {unknown or names}; use {','.join(QUEUES)}")
    pool = pool or ("threads" if names == ["fetch"] else "prefork")
    concurrency = concurrency or (32 if pool == "threads" else os.cpu_count() or 2)
    setup_logging(settings.log_level, settings.log_format)
    tune_gc_once_started()
    if settings.metrics_port:
        start_metrics_server(settings)
    # the clean stage's libraries (trafilatura, lxml: ~0.5 s) load here, once, before
    # the pool starts: not on every process's or thread's first page, and shared by
    # prefork children through the fork
    import newsq.clean.extract  # noqa: F401
    from newsq.config.celery import FETCH_QUEUE, PROCESS_QUEUE, app, task_annotations

    if FETCH_QUEUE in names and PROCESS_QUEUE in names:  # set before the tasks are loaded
        app.conf.task_annotations = task_annotations(settings, inline=True)
    pool_args = ["--pool", pool]
    if pool == "threads":  # newsq's adaptive thread pool (workers/pool.py), not Celery's;
        app.conf.worker_pool = "newsq.workers.pool:TaskPool"  # Celery's CLI takes only its names
        pool_args = []
    argv = [
        "worker",
        "--queues", ",".join(names),
        *pool_args,
        "--concurrency", str(concurrency),
        "--hostname", f"newsq-{'-'.join(names)}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel", settings.log_level,
        *(["--beat"] if beat else []),
    ]  # fmt: skip
    app.worker_main(argv)
    return 0
