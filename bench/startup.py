"""Start-up of newsq as a user sees it: ``newsq run`` of one URL, ``--help``, a worker.

    python -m bench.startup [--repeat 5] [--tree DIR]...

Every case runs the ``newsq`` command in a fresh process, as a user would, with one
page served from loopback (``NEWSQ_ALLOW_PRIVATE=1``; robots.txt is a 404):

``run``          ``newsq run URL`` with the embedded Redis, on a fresh store: wall time
                 from exec to exit, and the CPU seconds of it and its children
``run again``    the same on the store of the last ``run`` with a new URL (a cron job),
                 started at least a host interval (1/``NEWSQ_HOST_RATE``, 1 s by
                 default) after that run ended, as a cron job's next run would be:
                 sooner, its page waits for the host's politeness slot
``--version``,   wall time
``--help``
``worker``       ``newsq worker`` (its defaults: both queues, prefork) against a Redis
                 started here, one URL enqueued before it starts: ``taken`` is the time
                 from exec to the task's start (the ledger's ``t_start``), ``done`` to
                 the URL terminal
``worker thr``   the same with ``--pool threads``

The cases run alternated, ``--repeat`` rounds of each; the table gives medians and
(min-max). ``--tree DIR`` measures another checkout of newsq too (a worktree of an
older commit: the before of a change), alternated with this one in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench import serve
from bench.tables import median_range
from newsq.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGE = (
    "<html><head><title>Start-up bench story</title></head><body><article>"
    "<h1>Start-up bench story</h1>"
    + "".join(
        f"<p>Paragraph {n} of the one article the start-up bench serves, long enough "
        f"for the clean stage to keep it as the page's main text.</p>"
        for n in range(1, 13)
    )
    + "</article></body></html>"
).encode()


class _Page(serve.Handler):
    def do_GET(self) -> None:
        if self.path == "/robots.txt":
            self.send_error(404)
            return
        self.reply(200, PAGE, "text/html; charset=utf-8")


def serve_page() -> str:
    """Serve :data:`PAGE` at every path on a loopback port, in a thread: the base URL."""
    return serve.base_url(serve.start(_Page))


def shim(tree: Path, into: Path) -> Path:
    """A folder that makes ``import newsq`` the checkout ``tree`` (on PYTHONPATH): the
    repository's ``config``, ``tasks`` and ``workers`` are newsq's subpackages."""
    package = into / "newsq"
    package.mkdir(parents=True)
    for entry in (tree / "newsq").iterdir():
        (package / entry.name).symlink_to(entry)
    for name in ("config", "tasks", "workers"):
        (package / name).symlink_to(tree / name)
    return into


class Tree:
    """One newsq checkout under test: how to run its ``newsq`` command."""

    def __init__(self, name: str, pythonpath: Path | None) -> None:
        self.name = name
        self.pythonpath = pythonpath

    def command(self) -> list[str]:
        if self.pythonpath is None:  # this checkout: the installed console script
            return [str(Path(sys.executable).parent / "newsq")]
        return [sys.executable, "-m", "newsq"]

    def env(self, **extra: str) -> dict[str, str]:
        # PYTHONDONTWRITEBYTECODE would compile this checkout's modules on every run: an
        # installed newsq has its .pyc files (pip writes them), as a user's does
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NEWSQ_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
        env.update(NEWSQ_ALLOW_PRIVATE="1", **extra)
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        return env


HOST_INTERVAL = 1 / Settings.host_rate + 0.1
"""Seconds between a ``run`` and the next ``run again`` of its store: one interval of
the default ``NEWSQ_HOST_RATE`` (the runs drop every ``NEWSQ_`` variable) and a margin."""


class Runner:
    """Runs the cases for one tree; keeps every figure by case and column."""

    def __init__(self, tree: Tree, base: str, work: Path, redis_url: str) -> None:
        self.tree = tree
        self.base = base
        self.work = work
        self.redis_url = redis_url
        self.figures: dict[tuple[str, str], list[float]] = {}
        self.last_store: Path | None = None
        self.last_end = 0.0

    def add(self, case: str, column: str, value: float) -> None:
        self.figures.setdefault((case, column), []).append(value)

    def url(self) -> str:
        return f"{self.base}/{self.tree.name}/{uuid.uuid4().hex[:12]}.html"

    def _cpu_run(self, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"bench: {' '.join(argv)} exited {done.returncode}: "
                             f"{done.stderr.decode()[-500:]}")  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu

    def run(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.work))
        store = folder / "s.db"
        env = self.tree.env(NEWSQ_DATABASE_URL=f"sqlite:///{store}")
        wall, cpu = self._cpu_run([*self.tree.command(), "run", self.url()], env, folder)
        self.add("run", "wall", wall)
        self.add("run", "cpu", cpu)
        self.last_store = store
        self.last_end = time.monotonic()

    def run_again(self) -> None:
        assert self.last_store is not None
        time.sleep(max(0.0, self.last_end + HOST_INTERVAL - time.monotonic()))
        env = self.tree.env(NEWSQ_DATABASE_URL=f"sqlite:///{self.last_store}")
        wall, cpu = self._cpu_run([*self.tree.command(), "run", self.url()], env,
                                  self.last_store.parent)  # fmt: skip
        self.add("run again", "wall", wall)
        self.add("run again", "cpu", cpu)
        shutil.rmtree(self.last_store.parent, ignore_errors=True)

    def flag(self, flag: str) -> None:
        wall, cpu = self._cpu_run([*self.tree.command(), flag], self.tree.env(), self.work)
        self.add(flag, "wall", wall)
        self.add(flag, "cpu", cpu)

    def worker(self, case: str, extra: list[str]) -> None:
        import redis

        from newsq.ledger import Ledger
        from newsq.urls import normalize

        folder = Path(tempfile.mkdtemp(prefix="worker-", dir=self.work))
        prefix = f"b{uuid.uuid4().hex[:8]}"
        values = dict(NEWSQ_BROKER_URL=self.redis_url, NEWSQ_KEY_PREFIX=prefix,
                      NEWSQ_DATABASE_URL=f"sqlite:///{folder / 's.db'}")  # fmt: skip
        env = self.tree.env(**values)
        url = self.url()
        # the tree's own enqueue: its messages are what its worker reads
        self._cpu_run([*self.tree.command(), "enqueue", url], env, folder)
        client = redis.Redis.from_url(self.redis_url)
        ledger = Ledger(client, prefix)
        started_at = time.time()
        proc = subprocess.Popen([*self.tree.command(), "worker", *extra], env=env, cwd=folder,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while (entry := ledger.get(normalize(url)) or {}).get("t_done") is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: the worker did not finish its URL: {entry}")
                time.sleep(0.005)
            self.add(case, "taken", float(entry["t_start"]) - started_at)
            self.add(case, "done", float(entry["t_done"]) - started_at)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(30)
            client.close()
            shutil.rmtree(folder, ignore_errors=True)


CASES: list[tuple[str, Callable[[Runner], None]]] = [
    ("run", Runner.run),
    ("--version", lambda r: r.flag("--version")),
    ("run again", Runner.run_again),
    ("--help", lambda r: r.flag("--help")),
    ("worker", lambda r: r.worker("worker", [])),
    ("worker thr", lambda r: r.worker("worker thr", ["--pool", "threads"])),
]
COLUMNS = {"run": ("wall", "cpu"), "run again": ("wall", "cpu"), "--version": ("wall", "cpu"),
           "--help": ("wall", "cpu"), "worker": ("taken", "done"),
           "worker thr": ("taken", "done")}  # fmt: skip


def table(runners: list[Runner]) -> str:
    lines = [f"| case | column | {' | '.join(r.tree.name for r in runners)} |",
             "|---|---|" + "---|" * len(runners)]  # fmt: skip
    for case, _ in CASES:
        for column in COLUMNS[case]:
            cells = " | ".join(median_range(r.figures.get((case, column), [])) for r in runners)
            lines.append(f"| `{case}` | {column} s | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of every case")
    parser.add_argument("--tree", action="append", default=[], type=Path,
                        help="another newsq checkout to measure too (repeatable)")  # fmt: skip
    parser.add_argument("--only", help="comma-separated cases to run (default all)")
    args = parser.parse_args(argv)
    from newsq.workers.redis_server import RedisServer

    cases = [(n, f) for n, f in CASES if not args.only or n in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="newsq-startup-"))
    base = serve_page()
    with RedisServer() as server:
        trees = [Tree("this", None)]
        for i, tree in enumerate(args.tree):
            trees.append(Tree(tree.name or f"tree{i}", shim(tree.absolute(), work / f"shim{i}")))
        runners = [Runner(t, base, work, server.url) for t in trees]
        print(f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, load "
              f"{os.getloadavg()[0]:.2f}; {args.repeat} rounds", file=sys.stderr)  # fmt: skip
        for round_ in range(args.repeat):
            for name, case in cases:
                order = runners if round_ % 2 == 0 else runners[::-1]
                for runner in order:
                    if name == "run again" and runner.last_store is None:
                        continue
                    case(runner)
            print(f"round {round_ + 1} done", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    print(table(runners))


if __name__ == "__main__":
    main()
