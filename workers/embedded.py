"""Local worker processes, and a private Redis when none is configured.

``newsq run`` and ``newsq demo`` use the same code path as production: real Celery
workers in their own processes, consuming from Redis. Only the Redis server may be a
private one (started here, stopped at the end) when ``NEWSQ_BROKER_URL`` is unset.

Worker layout for ``--workers N`` (``layout``):

``combined`` (default)  N worker processes on both queues, each a thread pool of
                        ``fetch_threads``: a task fetches its URL and processes the page
                        at once, in memory; fetches wait on the network in their threads
                        while one thread per process uses the CPU. Fastest measured
                        (``bench/README.md``).
``prefork``             one worker on both queues with N prefork children, each fetching
                        and processing one URL at a time (hard time limits apply; no
                        overlap of network waits, so slow sites starve it).
``split``               one fetch worker (a thread pool) and one process worker with N
                        prefork children; the page goes between them through Redis.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from types import TracebackType

from newsq.config.settings import Settings
from newsq.errors import NewsqError
from newsq.workers.redis_server import RedisServer, die_with_parent

log = logging.getLogger(__name__)


class WorkerDied(NewsqError):
    """A local worker process exited before the work was done."""


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that hands ``settings`` to a child process."""
    env = dict(os.environ)
    env["NEWSQ_BROKER_URL"] = settings.broker_url or ""
    env["NEWSQ_DATABASE_URL"] = settings.database_url
    env["NEWSQ_KEY_PREFIX"] = settings.key_prefix
    env["NEWSQ_HOST_RATE"] = repr(settings.host_rate)
    if settings.allow_private.all:
        env["NEWSQ_ALLOW_PRIVATE"] = "1"
    env["NEWSQ_ROBOTS"] = "1" if settings.robots else "0"
    # glibc's default of 8 malloc arenas per core bloats a threaded worker by ~90 MB
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


class LocalCluster:
    """A private Redis (if needed) and local worker processes."""

    def __init__(self, settings: Settings, *, workers: int = 2, fetch_threads: int = 32,
                 log_level: str = "WARNING", layout: str = "combined") -> None:  # fmt: skip
        self.settings = settings
        self.workers = workers
        self.layout = layout
        self.fetch_threads = fetch_threads
        self.log_level = log_level
        self.redis_server: RedisServer | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        # the workers' own output (Celery's banner, their logs) goes to a file, shown
        # only when something goes wrong
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="newsq-workers-", suffix=".log", delete=False
        )

    def __enter__(self) -> LocalCluster:
        if not self.settings.broker_url:
            self.redis_server = RedisServer().start()
            self.settings = dataclasses.replace(self.settings, broker_url=self.redis_server.url)
        return self

    def start_workers(self) -> None:
        env = settings_env(self.settings)
        env["NEWSQ_LOG_LEVEL"] = self.log_level
        base = [sys.executable, "-m", "newsq", "worker"]
        threads = ["--pool", "threads", "--concurrency", str(self.fetch_threads)]
        specs = [
            ["--queues", "fetch", *threads],
            ["--queues", "process", "--pool", "prefork", "--concurrency", str(self.workers)],
        ]
        if self.layout == "combined":
            specs = [["--queues", "fetch,process", *threads]] * self.workers
        elif self.layout == "prefork":
            specs = [["--queues", "fetch,process", "--pool", "prefork",
                      "--concurrency", str(self.workers)]]  # fmt: skip
        for i, spec in enumerate(specs):
            own_env = dict(env)
            if self.settings.metrics_port:  # one metrics server per worker: PORT, PORT+1, ...
                own_env["NEWSQ_METRICS_PORT"] = str(self.settings.metrics_port + i)
            self.procs.append(
                subprocess.Popen(
                    base + spec,
                    env=own_env,
                    stdin=subprocess.DEVNULL,
                    stdout=self.log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent if sys.platform == "linux" else None,
                )
            )

    def log_tail(self, lines: int = 15) -> str:
        with open(self.log_file.name, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])

    def check_workers(self) -> None:
        """Raise WorkerDied when a worker process exited."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise WorkerDied(
                    f"a worker process exited with status {proc.returncode}; its log "
                    f"({self.log_file.name}) ends:\n{self.log_tail()}"
                )

    def stop_workers(self, grace: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0fs; killing it", proc.pid, grace)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop_workers()
        if self.redis_server is not None:
            self.redis_server.stop()
        self.log_file.close()
        if exc is None:
            os.unlink(self.log_file.name)
