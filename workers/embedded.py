"""Local worker processes, and a private Redis when none is configured.

``newsq run`` and ``newsq demo`` use the same code path as production: real Celery
workers in their own processes, consuming from Redis. Only the Redis server may be a
private one (started here, stopped at the end) when ``NEWSQ_BROKER_URL`` is unset.

Worker layout for ``--workers N``: one fetch worker (a thread pool: fetching waits on
the network, not the CPU) and one process worker with N prefork children (cleaning
and dedup are CPU-bound, one child per core).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from types import TracebackType

from config.settings import Settings
from newsq.servers import RedisServer

log = logging.getLogger(__name__)


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
    return env


class LocalCluster:
    """A private Redis (if needed) and local worker processes."""

    def __init__(self, settings: Settings, *, workers: int = 2, fetch_threads: int = 16,
                 log_level: str = "WARNING") -> None:  # fmt: skip
        self.settings = settings
        self.workers = workers
        self.fetch_threads = fetch_threads
        self.log_level = log_level
        self.redis_server: RedisServer | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalCluster:
        if not self.settings.broker_url:
            self.redis_server = RedisServer().start()
            self.settings = dataclasses.replace(self.settings, broker_url=self.redis_server.url)
        return self

    def start_workers(self) -> None:
        env = settings_env(self.settings)
        env["NEWSQ_LOG_LEVEL"] = self.log_level
        base = [sys.executable, "-m", "workers", "worker"]
        specs = [
            ["--queues", "fetch", "--pool", "threads", "--concurrency", str(self.fetch_threads)],
            ["--queues", "process", "--pool", "prefork", "--concurrency", str(self.workers)],
        ]
        for spec in specs:
            self.procs.append(
                subprocess.Popen(
                    base + spec, env=env, stdin=subprocess.DEVNULL, start_new_session=True
                )
            )

    def check_workers(self) -> None:
        """Raise RuntimeError when a worker process died."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker process {proc.args!r} exited with {proc.returncode}")

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
