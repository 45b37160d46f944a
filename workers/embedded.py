"""Local worker processes, and a private Redis when none is configured.

``newsq run`` and ``newsq demo`` use the same code path as production: real Celery
workers in their own processes, consuming from Redis. Only the Redis server may be a
private one (started here, stopped at the end) when ``NEWSQ_BROKER_URL`` is unset:
``newsq run``'s keeps the ledger and the dedup index in a folder beside the store
(:func:`state_folder`, :class:`~newsq.workers.redis_server.KeptRedis`), so the next run
fetches nothing the store has and a later copy joins its story; ``newsq demo``'s is
thrown away. The read commands use the same folder (:func:`attach`).

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
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from newsq.config.settings import PORT_MAXIMUM, Settings
from newsq.errors import ConfigError, NewsqError
from newsq.workers.forked import APART
from newsq.workers.redis_server import KeptRedis, RedisServer, die_with_parent

if TYPE_CHECKING:
    from newsq.feeds.intake import Intake

log = logging.getLogger(__name__)


class WorkerDied(NewsqError):
    """A local worker process exited before the work was done."""


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that hands ``settings`` to a child process."""
    env = dict(os.environ)
    env["NEWSQ_BROKER_URL"] = settings.broker_url or ""
    env["NEWSQ_STATE_URL"] = settings.state_url or ""  # blank: the broker's
    env["NEWSQ_SENTINEL_MASTER"] = settings.sentinel_master or ""
    env["NEWSQ_DATABASE_URL"] = settings.database_url
    env["NEWSQ_KEY_PREFIX"] = settings.key_prefix
    env["NEWSQ_HOST_RATE"] = repr(settings.host_rate)
    if settings.allow_private.all:
        env["NEWSQ_ALLOW_PRIVATE"] = "1"
    env["NEWSQ_ROBOTS"] = "1" if settings.robots else "0"
    # glibc's default of 8 malloc arenas per core bloats a threaded worker by ~90 MB
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def state_folder(database_url: str) -> Path | None:
    """Where the embedded mode keeps the Redis data of the store at ``database_url``:
    ``FILE.redis`` beside a SQLite file, ``NAME.redis`` in the working folder for
    another database NAME; None for an in-memory SQLite store (nothing outlives it)."""
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(database_url)
    except sa.exc.ArgumentError:
        return None
    name = url.database or ""
    if url.get_backend_name() == "sqlite":
        if name in ("", ":memory:") or url.query.get("mode") == "memory":
            return None
        return Path(f"{name}.redis")  # relative names are the working folder's, as SQLite's
    return Path(f"{name or 'newsq'}.redis")


def _who(owner: dict[str, Any]) -> str:
    if not owner:
        return "another newsq process"
    return f"'{owner.get('command', 'newsq')}' (pid {owner.get('pid', '?')})"


def _store_has_urls(database_url: str) -> bool:
    import sqlalchemy as sa

    from newsq.store.database import Store, urls

    store = Store.from_url(database_url, create=False)
    try:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(urls.c.url).limit(1)).first() is not None
    finally:
        store.close()


class LocalCluster:
    """A private Redis (if needed) and local worker processes.

    ``keep_state``: the private Redis keeps its data beside the store (``newsq run``),
    one run at a time (a second one waits), rather than in a throwaway folder.
    ``early``: the worker processes start on entering, before the Redis does, and
    import the pipeline (:mod:`newsq.workers.prestart`) while it starts and the input
    is read; :meth:`start_workers` hands them the broker.
    """

    def __init__(self, settings: Settings, *, workers: int = 2, fetch_threads: int = 32,
                 log_level: str = "WARNING", layout: str = "combined",
                 keep_state: bool = False, early: bool = False) -> None:  # fmt: skip
        processes = {"combined": workers, "prefork": 1}.get(layout, 2)
        last_port = (settings.metrics_port or 0) + processes - 1
        if settings.metrics_port and last_port > PORT_MAXIMUM:  # worker i serves on PORT+i
            raise ConfigError(
                f"NEWSQ_METRICS_PORT={settings.metrics_port}: {processes} local workers "
                f"need ports up to {last_port}, over {PORT_MAXIMUM}"
            )
        self.settings = settings
        self.keep_state = keep_state
        self.kept: KeptRedis | None = None
        self.unfinished: list[str] = []
        self.workers = workers
        self.layout = layout
        self.fetch_threads = fetch_threads
        self.log_level = log_level
        self.redis_server: RedisServer | None = None
        self.early = early
        self.procs: list[subprocess.Popen[bytes]] = []
        self._asked: set[int] = set()
        # the workers' own output (Celery's banner, their logs) goes to a file, shown
        # only when something goes wrong
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="newsq-workers-", suffix=".log", delete=False
        )

    def __enter__(self) -> LocalCluster:
        if self.early:
            self._spawn_workers()
        try:
            if not self.settings.broker_url:
                folder = state_folder(self.settings.database_url) if self.keep_state else None
                if folder is None:
                    self.redis_server = RedisServer().start()
                    url = self.redis_server.url
                else:
                    url = self._open_state(folder)
                self.settings = dataclasses.replace(self.settings, broker_url=url)
        except BaseException:
            self.stop_workers()
            raise
        return self

    def _open_state(self, folder: Path) -> str:
        """Start the Redis kept in ``folder`` (waiting for the process using it, if
        any) and note the URLs an earlier run left unfinished."""
        import redis

        from newsq.ledger import Ledger
        from newsq.migrate import upgrade

        kept = self.kept = KeptRedis(folder, "newsq run")
        kept.lock(on_wait=lambda owner: print(
            f"newsq: waiting for {_who(owner)} to finish with the embedded state in {folder}",
            file=sys.stderr))  # fmt: skip
        try:
            url = kept.start()
            client = redis.Redis.from_url(url)
            try:
                if client.dbsize() and not _store_has_urls(self.settings.database_url):
                    # its store was removed: the ledger would call every URL known
                    print(f"newsq: the store has no URLs; starting its embedded state in "
                          f"{folder} afresh", file=sys.stderr)  # fmt: skip
                    client.flushdb()
                upgrade(client, self.settings.key_prefix)  # a state kept by a version before
                ledger = Ledger(client, self.settings.key_prefix)
                self.unfinished = [left for left, _, _ in ledger.stuck(0.0, limit=10**9)]
            finally:
                client.close()
        except BaseException:
            kept.stop()
            raise
        return url

    def resume(self) -> list[str]:
        """Send again the URLs an earlier run on the kept state left unfinished (it was
        interrupted, or ``newsq retry`` queued them), before any worker starts: none of
        them is in progress. Returns them: new URLs of this run (:func:`resumed`)."""
        if not self.unfinished:
            return []
        from newsq.config.celery import make_app
        from newsq.connections import state_redis
        from newsq.feeds.send import lane_for, send_fetches
        from newsq.ledger import Ledger
        from newsq.pipeline import requeue

        urls, self.unfinished = self.unfinished, []
        print(f"newsq: resuming {len(urls)} URLs an earlier run left unfinished", file=sys.stderr)
        client = state_redis(self.settings)
        app = make_app(self.settings)
        try:
            # messages of theirs still queued would be a second delivery, fetched twice
            # when two threads take both: each goes out once, below
            app.control.purge()
            requeue(Ledger(client, self.settings.key_prefix), urls, lambda _url: None)
            # a re-run's leftovers are a backlog: the bulk lane
            send_fetches(app, urls, self.settings.fetch_batch, lane=lane_for(len(urls), bulk=True))
        finally:
            app.close()
            client.close()
        return urls

    def start_workers(self) -> None:
        """Start the worker processes on the broker (those started early: hand it to them)."""
        if not self.procs:
            self._spawn_workers()
        line = json.dumps({"NEWSQ_BROKER_URL": self.settings.broker_url or ""}) + "\n"
        for proc in self.procs:
            if proc.stdin is not None and proc.poll() is None:
                try:
                    proc.stdin.write(line.encode())
                    proc.stdin.close()
                except BrokenPipeError:  # it died: check_workers says so, with its log
                    pass

    def _spawn_workers(self) -> None:
        """The worker processes, waiting for the broker's URL (``newsq.workers.prestart``)."""
        env = settings_env(self.settings)
        env["NEWSQ_LOG_LEVEL"] = self.log_level
        # -P: a `newsq` folder in the working directory (a clone newsq was installed
        # from, not in editable mode) must not shadow the installed package
        base = [sys.executable, "-P", "-m", "newsq.workers.prestart", "worker"]
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
        if self.settings.metrics_port:  # one metrics server per worker: PORT, PORT+1, ...
            env["NEWSQ_METRICS_PORT"] = str(self.settings.metrics_port)
        # one process imports the pipeline once and forks the workers from it (on the
        # same cores, each importing its own was a second or more of CPU per worker)
        argv = list(base)
        for i, spec in enumerate(specs):
            argv += [APART, *spec] if i else spec
        self.procs.append(
            subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.PIPE,
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

    def ask_workers_to_stop(self) -> None:
        """SIGTERM to every worker (a warm shutdown: what runs finishes), once; the
        caller may do other work before :meth:`stop_workers` waits for them."""
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()  # one never given a broker exits on its own
            if proc.poll() is None and proc.pid not in self._asked:
                os.killpg(proc.pid, signal.SIGTERM)
                self._asked.add(proc.pid)

    def stop_workers(self, grace: float = 20.0) -> None:
        self.ask_workers_to_stop()
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                while self._unblock_reads() and time.monotonic() < deadline - 0.05:
                    with suppress(subprocess.TimeoutExpired):
                        proc.wait(0.05)
                        break
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0fs; killing it", proc.pid, grace)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # the workers forked from it are in its group and it waits for them; they
            # outlive it only when it was killed (they get a SIGTERM then)
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs = []
        self._asked.clear()

    def _unblock_reads(self) -> bool:
        """Wake the workers' waits for a message (BRPOP, up to a second), as if their
        time ran out: a worker shutting down waits for that reply before it exits. On
        the Redis this cluster started, every blocked client's; on another, those of
        newsq's connections only (a newsq worker of elsewhere woken so just asks again).
        False when the broker does not answer or refuses."""
        if not self.settings.broker_url:
            return False
        import redis

        from newsq.config.celery import BROKER_CLIENT_NAME
        from newsq.connections import broker_redis

        ours = self.redis_server is not None or self.kept is not None
        try:
            client = broker_redis(self.settings, socket_timeout=1)
        except (ValueError, NewsqError):
            return False
        try:
            for entry in client.client_list(_type="normal"):
                mine = ours or entry.get("name") == BROKER_CLIENT_NAME
                if mine and "b" in entry.get("flags", ""):  # blocked in a read
                    client.client_unblock(int(entry["id"]))
        except redis.RedisError:
            return False
        finally:
            client.close()
        return True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop_workers()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.kept is not None:
            self.kept.stop()
        self.log_file.close()
        if exc is None:
            os.unlink(self.log_file.name)


def _group_alive(group: int) -> bool:
    """Whether a process of process group ``group`` is still there."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process there, not ours
        return True
    return True


def resumed(intake: Intake, urls: list[str]) -> None:
    """Count the URLs :meth:`LocalCluster.resume` sent again as new ones of ``intake``
    (no longer ``known``: this run waits for them)."""
    again, new = set(urls), set(intake.new)
    intake.known[:] = [url for url in intake.known if url not in again]
    intake.new[:0] = [url for url in urls if url not in new]


@dataclasses.dataclass
class Attached:
    """A read command's view of the kept state: ``settings`` on its Redis, and whether
    this process started that server (``owned``) or uses the one a run started."""

    settings: Settings
    owned: bool
    kept: KeptRedis


@contextmanager
def attach(settings: Settings, command: str, wait: float = 30.0) -> Iterator[Attached | None]:
    """The kept state of the store, for ``newsq COMMAND`` with no ``NEWSQ_BROKER_URL``:
    the Redis a running ``newsq run`` uses, else one started on the folder for the
    block; None when there is no folder (no run made one), which is not created."""
    folder = state_folder(settings.database_url)
    if folder is None or not folder.is_dir():
        yield None
        return
    kept = KeptRedis(folder, f"newsq {command}")
    deadline = time.monotonic() + wait
    while not kept.try_lock():
        url = kept.running_url()
        if url is not None:
            yield Attached(dataclasses.replace(settings, broker_url=url), False, kept)
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"the embedded state in {folder} is held by "
                              f"{_who(kept.owner())}, whose Redis does not answer")  # fmt: skip
        time.sleep(0.1)  # its owner is starting or stopping its server
    try:
        url = kept.start()
        yield Attached(dataclasses.replace(settings, broker_url=url), True, kept)
    finally:
        kept.stop()
