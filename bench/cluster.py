"""The shared state on a Redis Cluster of three masters: each master's share of the work.

    python -m bench.cluster [--pages 605] [--workers 2] [--sites 1,12] [--rounds 1]

Runs ``newsq run --urls FILE --workers W`` on the speed bench's pages
(:mod:`bench.speed_pages`, served by nginx on loopback: :mod:`bench.speed_serve`) with the
broker on a plain private Redis and ``NEWSQ_STATE_URL`` on a fresh 3-master cluster
(``redis-server --cluster-enabled yes`` x3, ``redis-cli --cluster create``;
:class:`tests.cluster_server.LocalCluster`). ``--sites`` lists how many sites the pages
are spread over (one nginx per site, each on its own port: a site is ``host:port`` to
the boilerplate filter and politeness): 1 is the speed bench as it is, one site whose
template fingerprints all hash to one slot; more is what a surge over many outlets
looks like. Each master's CPU (``INFO`` ``used_cpu_user + used_cpu_sys``, its own
housekeeping in the same wall time measured idle beforehand and taken off) and its
commands (``INFO commandstats``, those inside Lua counted) are shown as shares of the
three masters' total, with the parts whose hash tags its slots hold (the default key
prefix, ``newsq``, each run on emptied servers); the target is no master above 50 %.
The busiest master's CPU per article gives the articles/s it could carry on one core,
beside the run's own rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from bench.speed import newsq_env
from bench.speed_pages import write_pages
from bench.speed_serve import NGINX_CONF, Served
from bench.tables import markdown
from newsq.ledger import buckets_of, read_counts
from newsq.workers.redis_server import RedisServer, free_port
from tests.cluster_server import LocalCluster

IDLE_SECONDS = 3.0


@dataclass(frozen=True)
class Sample:
    cpu: float  # seconds
    commands: int


def _sample(client: redis.Redis) -> Sample:
    cpu = client.info("cpu")
    commands = sum(int(v["calls"]) for v in client.info("commandstats").values())
    return Sample(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), commands)


def _owners(client: redis.Redis) -> list[tuple[int, int, int]]:
    """(first slot, last slot, port of its master) of every slot range."""
    return [(int(a), int(b), int(master[1])) for a, b, master, *_ in client.cluster("slots")]


def _parts_by_port(cluster: LocalCluster, prefix: str, sites: list[str]) -> dict[int, str]:
    """Which state each master's slots hold, by hash tag."""
    node = cluster.client(cluster.ports[0])
    ranges = _owners(node)
    node.close()

    def port_of(tag: str) -> int:
        slot = key_slot(tag.encode())
        return next(port for a, b, port in ranges if a <= slot <= b)

    held: dict[int, list[str]] = {port: [] for port in cluster.ports}
    held[port_of(f"{{{prefix}:dedup}}")].append("dedup")
    held[port_of(f"{{{prefix}:fetch}}")].append("frontier+politeness")
    held[port_of(f"{{{prefix}}}")].append("throughput, dead list")
    for port in cluster.ports:
        n = sum(1 for b in buckets_of(prefix) if port_of(b.tag) == port)
        held[port].append(f"{n} ledger buckets")
        n = sum(1 for site in sites if port_of(f"{{{site}}}") == port)
        held[port].append(f"{n} of {len(sites)} sites' boilerplate")
    return {port: ", ".join(parts) for port, parts in held.items()}


@dataclass
class Run:
    """One ``newsq run``'s figures: per master port, CPU (idle taken off), CPU with the
    idle in, commands, and microseconds per part (a slow-log run only)."""

    sites: int
    articles: int
    wall: float
    cpu: dict[int, float]
    raw: dict[int, float]
    commands: dict[int, int]
    parts: dict[int, dict[str, int]]


def run_once(cluster: LocalCluster, broker: RedisServer, urls_file: Path, workers: int,
             tmp: Path, sites: int, slowlog: bool) -> Run:  # fmt: skip
    """One ``newsq run`` with its state on ``cluster``, the servers emptied first."""
    # the default prefix, so its tags land where a deployment's do
    prefix, db = "newsq", tmp / f"run-{uuid.uuid4().hex[:8]}.db"
    env = newsq_env(broker.url, db, prefix)
    env["NEWSQ_STATE_URL"] = cluster.url
    clients = {port: cluster.client(port) for port in cluster.ports}
    for client in [*clients.values(), redis.Redis.from_url(broker.url)]:
        client.flushall()
    for client in clients.values():
        client.config_set("slowlog-max-len", 10_000_000 if slowlog else 128)
        client.config_set("slowlog-log-slower-than", 0 if slowlog else 10_000)
        client.slowlog_reset()
    try:
        idle0 = {p: _sample(c).cpu for p, c in clients.items()}
        time.sleep(IDLE_SECONDS)  # each master's housekeeping and cluster bus alone
        idle = {p: (_sample(c).cpu - idle0[p]) / IDLE_SECONDS for p, c in clients.items()}
        before = {p: _sample(c) for p, c in clients.items()}
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "newsq", "run", "--urls", str(urls_file),
               "--workers", str(workers), "--timeout", "900"]  # fmt: skip
        with db.with_suffix(".log").open("wb") as log:
            done = subprocess.run(cmd, env=env, cwd=tmp, stdout=log, stderr=log)
        wall = time.perf_counter() - started
        after = {p: _sample(c) for p, c in clients.items()}
        if done.returncode != 0:
            raise SystemExit(f"bench: newsq run failed: {db.with_suffix('.log')}")
        parts = {}
        if slowlog:
            for port, client in clients.items():
                client.config_set("slowlog-log-slower-than", -1)
                parts[port] = slowlog_parts(client, prefix)
        state = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        counts = read_counts(state, prefix)  # type: ignore[arg-type]
        state.close()
    finally:
        for client in clients.values():
            client.close()
    return Run(
        sites, counts["stored"] + counts["duplicate"], wall,
        {p: max(0.0, after[p].cpu - before[p].cpu - idle[p] * wall) for p in clients},
        {p: after[p].cpu - before[p].cpu for p in clients},
        {p: after[p].commands - before[p].commands for p in clients}, parts,
    )  # fmt: skip


def share_rows(run: Run, ports: list[int], held: dict[int, str]) -> list[list[str]]:
    """A row per master: its shares of the three masters' CPU and commands."""
    n = max(1, run.articles)
    total_cpu, total_raw = sum(run.cpu.values()) or 1e-9, sum(run.raw.values()) or 1e-9
    total_commands = sum(run.commands.values()) or 1
    return [[
        f"{run.sites}", f"{i + 1}", f"{100 * run.cpu[port] / total_cpu:.0f} %",
        f"{100 * run.raw[port] / total_raw:.0f} %",
        f"{100 * run.commands[port] / total_commands:.0f} %",
        f"{1000 * run.cpu[port] / n:.3f}", f"{run.commands[port] / n:.1f}", held[port],
    ] for i, port in enumerate(ports)]  # fmt: skip


def part_rows(run: Run, ports: list[int]) -> list[list[str]]:
    """A row per part: microseconds per article on each master (slow log)."""
    n = max(1, run.articles)
    names = sorted({name for parts in run.parts.values() for name in parts})
    total = sum(sum(parts.values()) for parts in run.parts.values()) or 1
    rows = []
    for name in names:
        per = [run.parts[port].get(name, 0) for port in ports]
        rows.append([f"{run.sites}", name, *(f"{u / n:.1f}" for u in per),
                     f"{100 * sum(per) / total:.0f} %"])  # fmt: skip
    return rows


def sites_server(docroot: Path, tmp: Path, n: int) -> tuple[Served, list[int]]:
    """One nginx serving ``docroot`` on ``n`` ports: ``n`` sites (``127.0.0.1:PORT``)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("bench: the cluster bench needs nginx (apt-get install nginx)")
    ports = [free_port() for _ in range(n)]
    one = "        listen 127.0.0.1:{port} backlog=4096;\n"
    listens = "".join(one.replace("{port}", str(port)) for port in ports)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.replace(one, listens).format(user=user, tmp=tmp, port=ports[0],
                                                            docroot=docroot))  # fmt: skip
    cmd = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    proc = subprocess.Popen([*cmd, "-g", "daemon off;"], stdin=subprocess.DEVNULL)
    served = Served(proc, ports[0], "nginx")
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    served.stop()
                    raise SystemExit(f"bench: nginx did not listen on port {port}") from None
                time.sleep(0.05)
    return served, ports


def _part(key: str, prefix: str) -> str:
    """The part of the state a key belongs to, by its hash tag."""
    for start, part in (
        (f"{{{prefix}:dedup}}", "dedup"),
        (f"{{{prefix}:fetch}}", "frontier"),
        (f"{{{prefix}:l:", "ledger"),
        (f"{{{prefix}}}", "throughput, dead"),
    ):
        if key.startswith(start):
            return part  # fmt: skip
    return "boilerplate" if ":bp:" in key else "robots" if ":robots" in key else "other"


def slowlog_parts(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Microseconds one master spent per part, from its slow log (every command logged):
    a script call by its first key, with the commands it ran (logged apart, skipped)."""
    raw = client.execute_command("SLOWLOG", "GET", "-1", NEVER_DECODE=True)
    out: dict[str, int] = {}
    for entry in raw:
        usec, args = int(entry[2]), [a.decode("utf-8", "replace") for a in entry[3]]
        peer = entry[4].decode() if len(entry) > 4 else ""
        if peer.startswith("?") or not args:  # inside a script: in the script's own time
            continue
        scripted = args[0].lower() in ("evalsha", "eval") and len(args) > 3 and args[2] != "0"
        key = args[3] if scripted else args[1] if len(args) > 1 else ""
        part = _part(key, prefix) if key else "other"
        out[part] = out.get(part, 0) + usec
    return out


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__, formatter_class=raw
    )
    parser.add_argument("--pages", type=int, default=605)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sites", default="1,60", help="comma list: sites per run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-parts", action="store_true", help="skip the slow-log runs")
    args = parser.parse_args(argv)
    spreads = [int(n) for n in args.sites.split(",")]

    with tempfile.TemporaryDirectory(prefix="newsq-cluster-") as name:
        tmp = Path(name)
        docroot = tmp / "www"
        paths = write_pages(docroot, args.pages)
        pages, ports = sites_server(docroot, tmp, max(spreads))
        broker = RedisServer().start()
        cluster = LocalCluster().start()
        shares: list[list[str]] = []
        parts: list[list[str]] = []
        try:
            print(f"# State on a 3-master Redis Cluster: {args.pages} pages, newsq run "
                  f"--workers {args.workers}, {os.cpu_count()} CPUs, "
                  f"load {os.getloadavg()[0]:.2f}\n", flush=True)  # fmt: skip
            kinds = [False] * args.rounds + ([] if args.no_parts else [True])
            for slowlog in kinds:
                for n in spreads:
                    urls_file = tmp / f"urls-{n}.txt"
                    urls_file.write_text("".join(f"http://127.0.0.1:{ports[i % n]}{p}\n"
                                                 for i, p in enumerate(paths)))  # fmt: skip
                    run = run_once(cluster, broker, urls_file, args.workers, tmp, n, slowlog)
                    sites = [f"127.0.0.1:{port}" for port in ports[:n]]
                    held = _parts_by_port(cluster, "newsq", sites)
                    if slowlog:
                        parts += part_rows(run, cluster.ports)
                    else:
                        shares += share_rows(run, cluster.ports, held)
                    print(f"{n} site(s){' (slow log on)' if slowlog else ''}: {run.articles} "
                          f"articles in {run.wall:.1f} s ({run.articles / run.wall:.0f}/s)",
                          flush=True)  # fmt: skip
        finally:
            cluster.stop()
            broker.stop()
            pages.stop()
        print()
        head = ["sites", "master", "CPU share", "CPU share (idle in)", "commands share",
                "CPU ms/article", "commands/article", "its slots hold"]  # fmt: skip
        print(markdown([head, *shares]))
        if parts:
            print("\nExecution time per article by part and master, µs (slow log on):\n")
            head = ["sites", "part", *(f"master {i + 1}" for i in range(len(cluster.ports))),
                    "share"]  # fmt: skip
            print(markdown([head, *parts]))
        print(f"\nload after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
