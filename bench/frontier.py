"""What a URL of a busy, rate-limited host costs Redis: the frontier against countdowns.

``python -m bench.frontier [--sizes 100,300] [--small-hosts 50] [--small-each 4]
[--rate 5] [--old-sizes 50,100] [--old REV] [--full]``

A farm of HTTP servers on loopback, one port per host (``host:port`` is newsq's unit of
politeness): one big host and ``--small-hosts`` small ones. Every page answers 404, so a
URL ends at the fetch stage (``failed``/``http_error``) and the figures are those of
what a host's backlog changes: the enqueue, Celery's messages, the ledger, politeness
and the frontier; the process stage's cost is the same per article whatever the
backlog (``bench.redis_cost``). Each run starts its own redis-server (so ``INFO
commandstats``, which counts the commands inside Lua scripts too, counts this run
only) and two real ``newsq worker`` processes (fetch and process queues, 32 threads
each, as ``newsq run`` does), ``NEWSQ_HOST_RATE`` = ``--rate``, robots.txt on; the URLs
go in as ``newsq enqueue --urls`` sends them (bulk lane, 8 a message). Runs per design:

    big     ``--sizes`` URLs of the big host alone: commands per URL at each backlog
    small   ``--small-each`` URLs on each small host
    mixed   the largest size on the big host and the small hosts' URLs, at once: when
            the small hosts are drained, against the big host

The old design (``--old REV``, by default the commit before the frontier: a throttled
URL went back as a countdown task) runs the same from a ``git worktree`` of that
commit, at ``--old-sizes`` (each waiting URL asks again at each of its host's tokens:
quadratic in the backlog until the workers' CPU caps how often they ask). Per run:
Redis commands per URL (all commands in the run, less the bench's own reads), the idle
workers' commands per second (measured before, included in the total), the workers'
CPU per URL, seconds, when the last URL of the small hosts and of the big host ended,
and the most requests any host served in one second (sliding window), against
``--rate``.
``--full`` is the issue's size: 10,000 URLs of the big host and 10,000 over 50 small
hosts (2,000 s at 5/s).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import cast

import psutil
import redis

from bench import serve
from bench.speed_serve import _wait_port, find_nginx
from bench.tables import markdown
from newsq.config.celery import BULK, make_app
from newsq.config.settings import Settings
from newsq.feeds.intake import enqueue
from newsq.feeds.send import send_fetches
from newsq.ledger import Ledger, buckets_of, read_counts
from newsq.store.database import Store
from newsq.workers.redis_server import RedisServer, free_port
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench"
OLD_REV = "04a89a0^"  # the commit before "Frontier: URLs wait in their host's queue"
WORKERS = 2


def most_in_a_second(times: list[float]) -> int:
    """The most of ``times`` within any one second (a sliding window)."""
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


class Farm:
    """One HTTP server per host on loopback, answering 404; it notes each request's time."""

    def __init__(self, hosts: int) -> None:
        self.hits: dict[int, list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self.servers = [self._server() for _ in range(hosts)]
        self.ports = [s.server_address[1] for s in self.servers]

    def _server(self) -> ThreadingHTTPServer:
        farm = self

        class Handler(serve.Handler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with farm.lock:
                    farm.hits[cast(ThreadingHTTPServer, self.server).server_port].append(
                        time.monotonic()
                    )
                self.reply(404, b"", "text/html")

        return serve.start(Handler)

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()

    def close(self) -> None:
        for server in self.servers:
            serve.stop(server)


FARM_CONF = """\
{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format hit '$msec $server_port';
    access_log {tmp}/hits.log hit;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_timeout 120;
    keepalive_requests 1000000;
    server {{
{listen}
        location / {{ return 404; }}
    }}
}}
"""


class NginxFarm:
    """The same farm served by one nginx, each request's time off its access log
    (``$msec``): the Python servers note a request only when their thread gets the
    GIL, which on the loaded 2 cores packed a host's requests closer than they came."""

    def __init__(self, hosts: int, nginx: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="newsq-farm-"))
        self.ports = [free_port() for _ in range(hosts)]
        listen = "\n".join(f"        listen 127.0.0.1:{p};" for p in self.ports)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = self._dir / "nginx.conf"
        conf.write_text(FARM_CONF.format(user=user, tmp=self._dir, listen=listen))
        self._log = self._dir / "hits.log"
        self._proc = subprocess.Popen(
            [nginx, "-p", str(self._dir), "-e", str(self._dir / "error.log"), "-c", str(conf),
             "-g", "daemon off;"], stdin=subprocess.DEVNULL)  # fmt: skip
        for port in self.ports:
            _wait_port(port, self._proc, "the farm's nginx")
        self._from = 0

    @property
    def hits(self) -> dict[int, list[float]]:
        # $msec is to the millisecond, cut: a window may count one request more
        found: dict[int, list[float]] = defaultdict(list)
        with self._log.open("rb") as log:
            log.seek(self._from)
            for line in log:
                at, port = line.split()
                found[int(port)].append(float(at))
        return found

    def reset(self) -> None:
        self._from = self._log.stat().st_size if self._log.exists() else 0

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def make_farm(hosts: int) -> Farm | NginxFarm:
    """nginx's farm when nginx is installed, else the Python servers' (said on stderr)."""
    nginx = find_nginx()
    if nginx is None:
        print("bench: nginx not installed: the farm's request times are the Python "
              "servers', which a loaded machine delays", file=sys.stderr)  # fmt: skip
        return Farm(hosts)
    return NginxFarm(hosts, nginx)


@dataclass
class Run:
    design: str
    phase: str
    big: int
    small: int
    per_url: float
    idle_per_s: float
    seconds: float
    small_done: float | None
    big_done: float | None
    big_peak: int
    small_peak: int
    calls: dict[str, int]
    cpu_ms: float
    """the workers' CPU (all their processes) per URL"""
    small_rates: list[float] = field(default_factory=list)
    """each small host's URLs per second: its URLs over when its last one ended"""

    @property
    def big_rate(self) -> float | None:
        return self.big / self.big_done if self.big and self.big_done else None


@contextmanager
def old_code(rev: str) -> Iterator[Path]:
    """A folder to put on PYTHONPATH that imports ``newsq`` as of ``rev`` (a git worktree
    of it, laid out as the installed package is: config, tasks, workers inside)."""
    tmp = Path(tempfile.mkdtemp(prefix="newsq-old-"))
    tree = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    try:
        shim = tmp / "shim" / "newsq"
        shim.mkdir(parents=True)
        for entry in [*(tree / "newsq").iterdir(), tree / "config", tree / "tasks",
                      tree / "workers"]:  # fmt: skip
            (shim / entry.name).symlink_to(entry)
        yield shim.parent
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       check=False, capture_output=True)  # fmt: skip


def worker_env(url: str, database_url: str, rate: float, path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    env.update({
        "NEWSQ_BROKER_URL": url,
        "NEWSQ_DATABASE_URL": database_url,
        "NEWSQ_KEY_PREFIX": PREFIX,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": f"{rate:g}",
        "NEWSQ_ROBOTS": "1",
        "NEWSQ_LOG_LEVEL": "INFO",
        "NEWSQ_FETCH_RETRIES": "0",
        "PYTHONPATH": str(path),
    })  # fmt: skip
    return env


def _cpu(pids: list[int]) -> float:
    """CPU seconds used so far by ``pids`` and their children."""
    total = 0.0
    for pid in pids:
        with suppress(psutil.Error):
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                with suppress(psutil.Error):
                    times = p.cpu_times()
                    total += times.user + times.system
    return total


def _calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def one_run(design: str, phase: str, farm: Farm | NginxFarm, big: int, small_each: int,
            args: argparse.Namespace, code: Path, tmp: Path) -> Run:  # fmt: skip
    big_port, small_ports = farm.ports[0], farm.ports[1 : 1 + args.small_hosts]
    big_urls = [f"http://127.0.0.1:{big_port}/big/{n}" for n in range(big)]
    small_urls = [f"http://127.0.0.1:{p}/small/{n}" for p in small_ports for n in range(small_each)]
    urls = big_urls + small_urls
    name = f"{design}-{phase}-{big}-{len(small_urls)}"
    with RedisServer() as server:
        database_url = f"sqlite:///{tmp / f'{name}.db'}"
        settings = replace(Settings(), broker_url=server.url, key_prefix=PREFIX,
                           database_url=database_url)  # fmt: skip
        client = redis.Redis.from_url(server.url)
        env = worker_env(server.url, database_url, args.rate, code)
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
               "--pool", "threads", "--concurrency", "32"]  # fmt: skip
        logs = [tmp / f"{name}-{i}.log" for i in range(WORKERS)]
        with (
            running(cmd, env, logs[0], cwd=tmp) as first,
            running(cmd, env, logs[1], cwd=tmp) as second,
        ):
            deadline = time.monotonic() + 120
            while sum(log.read_text().count("warmed up") for log in logs) < WORKERS:
                if first.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: a worker did not start; see {logs[0]}")
                time.sleep(0.2)
            time.sleep(1.0)
            client.config_resetstat()
            time.sleep(3.0)
            idle = sum(_calls(client).values()) / 3.0
            cpu_before = _cpu([first.pid, second.pid])
            farm.reset()
            client.config_resetstat()
            started = time.monotonic()
            ledger = Ledger(client, PREFIX)
            store = Store.from_url(database_url)
            app = make_app(settings)
            new: list[str] = []
            enqueue(ledger, store, urls, send=new.extend)
            send_fetches(app, new, settings.fetch_batch, lane=BULK)  # as a URL file does
            app.close()
            polls = 0
            limit = time.monotonic() + len(big_urls) / args.rate * 3 + 120
            while time.monotonic() < limit:
                counts = read_counts(client, PREFIX)
                polls += 1
                done = sum(counts[s] for s in ("failed", "skipped", "stored", "duplicate"))
                if done >= len(urls):
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            cpu = _cpu([first.pid, second.pid]) - cpu_before
            calls = _calls(client)
            calls["hgetall"] -= polls * len(buckets_of(PREFIX))  # a poll reads every bucket
            calls.pop("info", None)
            calls.pop("config|resetstat", None)
            if done < len(urls):
                print(f"bench: {name}: {len(urls) - done} URLs unfinished after {seconds:.0f} s",
                      file=sys.stderr)  # fmt: skip
        t_done = [float(e.get("t_done") or "nan") for e in (ledger.get(u) or {} for u in urls)]
        store.close()
        client.close()
    t0 = time.time() - (time.monotonic() - started)
    hits = farm.hits  # read once: the nginx farm parses its log on every read
    big_t = [t - t0 for t in t_done[: len(big_urls)]]
    small_t = [t - t0 for t in t_done[len(big_urls) :]]
    return Run(
        design, phase, len(big_urls), len(small_urls), sum(calls.values()) / len(urls), idle,
        seconds, max(small_t) if small_t else None, max(big_t) if big_t else None,
        most_in_a_second(hits.get(big_port, [])),
        max((most_in_a_second(hits.get(p, [])) for p in small_ports), default=0),
        calls, cpu * 1000 / len(urls),
        _host_rates(small_t, small_each),
    )  # fmt: skip


def _host_rates(done: list[float], each: int) -> list[float]:
    """Each host's URLs per second, from when each of its ``each`` URLs (in a row) ended."""
    return [each / max(done[i : i + each]) for i in range(0, len(done), each)] if each else []


def table(runs: list[Run], rate: float) -> str:
    head = ("design", "run", "big-host URLs", "small-host URLs", "Redis cmds/URL",
            "idle cmds/s", "worker CPU ms/URL", "seconds", "small hosts done (s)",
            "big host done (s)",
            f"most req/s big (limit {rate:g})", "most req/s small",
            "small host URLs/s (median, slowest)", "big host URLs/s")  # fmt: skip
    rows = [head]
    for r in runs:
        rows.append((r.design, r.phase, str(r.big), str(r.small), f"{r.per_url:.1f}",
                     f"{r.idle_per_s:.0f}", f"{r.cpu_ms:.1f}", f"{r.seconds:.1f}",
                     "-" if r.small_done is None else f"{r.small_done:.1f}",
                     "-" if r.big_done is None else f"{r.big_done:.1f}",
                     str(r.big_peak) if r.big else "-",
                     str(r.small_peak) if r.small else "-",
                     _rates(r.small_rates),
                     "-" if r.big_rate is None else f"{r.big_rate:.2f}"))  # fmt: skip
    return markdown(rows)


def _rates(rates: list[float]) -> str:
    if not rates:
        return "-"
    ordered = sorted(rates)
    return f"{ordered[len(ordered) // 2]:.2f}, {ordered[0]:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.frontier",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="100,300", help="big-host backlogs, frontier")
    parser.add_argument("--old-sizes", default="50,100", help="big-host backlogs, old design")
    parser.add_argument("--small-hosts", type=int, default=50)
    parser.add_argument("--small-each", type=int, default=4)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--old", default=OLD_REV, help="the old design's commit ('' skips it)")
    parser.add_argument("--only", choices=("big", "small", "mixed"), help="one kind of run")
    parser.add_argument("--detail", action="store_true", help="commands per URL by name, too")
    parser.add_argument(
        "--full", action="store_true", help="the issue's size: 10,000 + 50 × 200 (2,000 s a run)"
    )
    args = parser.parse_args(argv)
    if args.full:
        args.sizes, args.small_each, args.small_hosts = "1000,10000", 200, 50
    sizes = [int(s) for s in args.sizes.split(",") if s]
    old_sizes = [int(s) for s in args.old_sizes.split(",") if s]
    farm = make_farm(1 + args.small_hosts)
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="newsq-frontier-") as folder:
            tmp = Path(folder)
            designs = [("frontier", sizes, ROOT)]
            with old_code(args.old) if args.old else nullcontext() as old:
                if old is not None:
                    designs.append(("old", old_sizes, old))
                for design, big_sizes, code in designs:
                    plan = [("big", n, 0) for n in big_sizes]
                    plan += [
                        ("small", 0, args.small_each),
                        ("mixed", max(big_sizes), args.small_each),
                    ]
                    for phase, big, each in plan:
                        if args.only and phase != args.only:
                            continue
                        run = one_run(design, phase, farm, big, each, args, code, tmp)
                        print(f"{design} {phase}: {run.per_url:.1f} cmds/URL, {run.seconds:.1f} s",
                              file=sys.stderr, flush=True)  # fmt: skip
                        runs.append(run)
    finally:
        farm.close()
    print(table(runs, args.rate))
    if args.detail:
        for r in runs:
            top = sorted(r.calls.items(), key=lambda kv: -kv[1])[:30]
            per = ", ".join(f"{k} {v / (r.big + r.small):.1f}" for k, v in top)
            print(f"{r.design} {r.phase} {r.big}+{r.small}: {per}")


if __name__ == "__main__":
    main()
