"""A newsq worker's start-up, in Celery's signals, and ``newsq worker`` over it.

``celery -A newsq worker`` and ``newsq worker`` run the same code: importing
:mod:`newsq.celery` connects the handlers below, and ``newsq worker`` only picks
defaults (pool, concurrency, hostname), checks the broker once (``--broker-wait``) and
starts Celery's worker with the options its command line would give it.

    import_modules       before the tasks load: the metrics' multiprocess folder
    celeryd_init,        newsq's one-line (or JSON) logging instead of Celery's
    setup_logging
    worker_init          newsq's adaptive pool for ``--pool threads``; inline time
                         limits when one worker consumes both queues; the Redis keys
                         of an older layout moved; the metrics server; the clean
                         stage's libraries, imported once
    worker_ready,        the start-up's objects frozen out of garbage collection
    worker_process_init  (the process's resources are warmed in ``tasks/context.py``)
    worker_ready,        the webhook's deliverer (``NEWSQ_WEBHOOK_URL``), a thread of
    worker_shutdown      the main process, started and stopped
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import tempfile
from contextlib import suppress
from typing import Any

from celery import Celery, bootsteps, signals

from newsq.config.celery import (
    FETCH_QUEUE,
    FETCH_TASK,
    PROCESS_QUEUE,
    QUEUES,
    app,
    task_annotations,
)
from newsq.config.settings import Settings, get_settings
from newsq.errors import ConfigError
from newsq.records import QUEUED
from newsq.workers.early import read_language_model, resume_gc
from newsq.workers.logs import setup_logging
from newsq.workers.reconnect import GiveBackOnReconnect

log = logging.getLogger(__name__)

THREADS_DEFAULT = 32

# gen0 collections every 50,000 net allocations instead of 700: an extraction makes
# many short-lived objects, and each young collection also walks what survived
GC_THRESHOLD = (50_000, 50, 100)


class _PutOffAtDebug(logging.Filter):
    """Celery's "Task newsq.fetch[...] succeeded in 0.005s" for a fetch put off until its
    host's turn (it only sent itself again, and the URL is ``queued``) is noise at INFO:
    the line goes out at DEBUG. Every other success, and every failure, is left as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)  # celery.app.trace's context of the line
        if (
            record.levelno != logging.INFO
            or not isinstance(data, dict)
            or data.get("name") != FETCH_TASK
            or data.get("return_value") != repr(QUEUED)
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_PUT_OFF_AT_DEBUG = _PutOffAtDebug()  # one instance: addFilter adds it once, however often


class WakeOnSignal(bootsteps.StartStopStep):
    """Celery's event loop looks at its shutdown flag only between polls of up to a
    second, so a SIGTERM waited that long: the signal now also writes a byte to a pipe
    the loop watches (``signal.set_wakeup_fd``), and the loop looks at once."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.pipe: tuple[int, int] | None = None

    def register_with_event_loop(self, worker: Any, hub: Any) -> None:
        if self.pipe is None:  # once: the loop registers again after a reconnect
            self.pipe = os.pipe()
            for fd in self.pipe:
                os.set_blocking(fd, False)
            signal.set_wakeup_fd(self.pipe[1], warn_on_full_buffer=False)
        hub.add_reader(self.pipe[0], self._drain)

    def _drain(self) -> None:
        assert self.pipe is not None
        with suppress(BlockingIOError):
            os.read(self.pipe[0], 4096)


app.steps["worker"].add(WakeOnSignal)
app.steps["consumer"].add(GiveBackOnReconnect)


@signals.setup_logging.connect
@signals.celeryd_init.connect  # earlier: Celery warns (running as root, ...) before set-up
def _logging(**_: Any) -> None:
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    logging.getLogger("celery.app.trace").addFilter(_PUT_OFF_AT_DEBUG)


@signals.import_modules.connect
def _metrics_folder(**_: Any) -> None:
    """prometheus-client chooses multiprocess mode when it is first imported, so the
    folder is set before the tasks (which import ``newsq.metrics``) load; a too-early
    import is an error rather than silently wrong numbers."""
    if not get_settings().metrics_port or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="newsq-metrics-")


@signals.worker_init.connect
def _worker_init(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    consumed = sorted(sender.app.amqp.queues.consume_from or QUEUES)
    from celery.concurrency.thread import TaskPool as CeleryThreads

    threads = sender.pool_cls is CeleryThreads
    if threads:  # --pool threads means newsq's adaptive pool
        from newsq.workers.pool import TaskPool

        sender.pool_cls = TaskPool
    if FETCH_QUEUE in consumed and PROCESS_QUEUE in consumed:
        # the fetch task processes the page it fetched: it gets both stages' limits
        for name, limits in task_annotations(settings, inline=True).items():
            for key, value in limits.items():
                setattr(sender.app.tasks[name], key, value)
    upgrade_state(settings)
    port = start_metrics_server(settings) if settings.metrics_port else None
    # the clean stage's libraries (trafilatura, lxml) load and warm here, once, before
    # the pool starts: not on every process's or thread's first page; prefork children
    # inherit them, and the language model, read in a thread since the start: a thread
    # pool takes tasks meanwhile (a page that needs the model waits for it)
    from newsq.clean.extract import warm_up as warm_clean

    warm_clean()
    if threads:
        read_language_model()  # started already by `newsq worker`: then it only waits
    else:
        from newsq.clean.metadata import language_identifier

        language_identifier()

    pool = getattr(sender.pool_cls, "__module__", str(sender.pool_cls))
    log.info("newsq worker: queues %s, pool %s, concurrency %s, metrics %s, log %s",
             ",".join(consumed), pool, sender.concurrency, port or "off",
             settings.log_format)  # fmt: skip


def upgrade_state(settings: Settings) -> None:
    """The Redis keys of an older layout moved to today's, once (:mod:`newsq.migrate`),
    before this worker takes a task; a state not reachable yet is the tasks' to report."""
    import redis

    from newsq.connections import state_redis
    from newsq.migrate import upgrade

    client = state_redis(settings)
    try:
        upgrade(client, settings.key_prefix)
    except redis.RedisError as exc:
        log.warning("newsq worker: keys of an older layout not looked for: %s", exc)
    finally:
        client.close()


def start_metrics_server(settings: Settings) -> int | None:
    """Serve the summed metrics of this worker and its pool children on the metrics
    port; children that exit are marked dead so their live gauges are dropped."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    from newsq.connections import broker_redis, state_redis
    from newsq.metrics import RedisStateCollector

    def _child_gone(pid: int | None = None, **_: Any) -> None:
        mark_process_dead(pid or os.getpid())

    signals.worker_process_shutdown.connect(_child_gone, weak=False)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    client = state_redis(settings, socket_timeout=2)
    broker = broker_redis(settings, socket_timeout=2) if settings.state_url else None
    registry.register(RedisStateCollector(client, settings.key_prefix, QUEUES, broker))
    port = settings.metrics_port or 0
    try:
        start_http_server(port, addr=settings.metrics_addr, registry=registry)
    except OSError as exc:  # e.g. two workers on one host given the same port
        log.error("metrics server not started on %s:%d: %s", settings.metrics_addr, port, exc)
        return None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, port)
    return port


@signals.worker_ready.connect
@signals.worker_process_init.connect
def _freeze_gc(**_: Any) -> None:
    """Move every object alive now (Celery, kombu, trafilatura, lxml's module state:
    the worker's start-up) to a permanent generation that collections skip, in the
    main process once ready and in each prefork child after the fork; collection,
    held off through the start (``workers.early.pause_gc``), resumes."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    resume_gc()


@signals.worker_ready.connect
def _webhook_start(**_: Any) -> None:
    """Every worker runs a deliverer; the one holding the lease sends (newsq.webhooks)."""
    if get_settings().webhook_url:
        from newsq.webhooks.service import service

        service.start(get_settings())


@signals.worker_shutdown.connect
def _webhook_stop(**_: Any) -> None:
    if get_settings().webhook_url:
        from newsq.webhooks.service import service

        service.stop()


def wait_for_broker(app: Celery, wait: float | None) -> None:
    """Return once ``app``'s broker answers, or at once when ``wait`` is None (Celery then
    retries forever: say so, once); raise ``redis.ConnectionError`` after ``wait`` s.

    Through Celery's own connection, so TLS and transport options are the worker's."""
    import redis
    from kombu.exceptions import OperationalError
    from kombu.utils.url import maybe_sanitize_url

    shown = maybe_sanitize_url(app.conf.broker_url)
    with app.connection_for_write() as conn:
        try:
            conn.ensure_connection(max_retries=0)  # one attempt
            return
        except OperationalError as exc:
            resume_gc()  # held off through the start (early.pause_gc); the wait may last
            if wait is None:
                print(f"newsq: broker {shown} not reachable ({exc}); waiting for it forever "
                      "(--broker-wait SECONDS gives up)", file=sys.stderr)  # fmt: skip
                return
        try:
            conn.ensure_connection(interval_start=0.5, interval_step=0.5, interval_max=2,
                                   timeout=wait)  # fmt: skip
        except OperationalError as exc:
            gave_up = f"gave up after --broker-wait {wait:g} s"
            raise redis.ConnectionError(f"{shown}: {exc} ({gave_up})") from None


def run_worker(settings: Settings, queues: str, concurrency: int | None,
               pool: str | None, *, beat: bool = False,
               broker_wait: float | None = None) -> int:  # fmt: skip
    """Run a Celery worker until stopped; ``beat`` embeds Celery beat (feed polling ticks);
    ``broker_wait``: seconds to wait for an unreachable broker at start, None for ever."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise ConfigError(f"--queues: unknown queue(s) {unknown or names}; use {','.join(QUEUES)}")
    pool = pool or ("threads" if names == ["fetch"] else "prefork")
    concurrency = concurrency or (THREADS_DEFAULT if pool == "threads" else os.cpu_count() or 2)
    if settings.webhook_url:  # a refused target is one line, before the worker starts
        from newsq.webhooks.deliver import check

        check(settings)
    wait_for_broker(app, broker_wait)  # this module connected the start-up signals

    # what `celery worker --queues ... --pool ...` does, without Celery's command line:
    # importing it (celery.bin) loads its shells' click_repl and prompt_toolkit too
    from celery.concurrency import get_implementation
    from celery.utils.nodenames import default_nodename, host_format

    worker = app.Worker(
        queues=names,
        pool_cls=get_implementation(pool),
        concurrency=concurrency,
        hostname=host_format(default_nodename(f"newsq-{'-'.join(names)}-{os.getpid()}@%h")),
        without_gossip=True,
        without_mingle=True,
        loglevel=settings.log_level,
        beat=beat,
    )
    worker.start()
    return int(worker.exitcode or 0)
