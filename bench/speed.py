"""End-to-end speed of newsq against trafilatura's crawler and a bare fetch+extract pool.

    python -m bench.speed [--pages 605] [--workers 2] [--latency 0,200] [--paced 0.5]
                          [--newsq-workers N] [--repeat N]

One run, one table: the anchors and newsq on the same N distinct pages (the 121 dev
pages in text variants, :mod:`bench.speed_pages`), served by nginx on loopback
(:mod:`bench.speed_serve`), behind an injected delay for latency > 0. newsq runs as a
user runs it, ``newsq run --urls FILE --workers W`` (``--newsq-workers N`` for another
count), against a real Redis (started here) and a fresh SQLite store, with
``NEWSQ_ALLOW_PRIVATE=1 NEWSQ_HOST_RATE=0 NEWSQ_ROBOTS=0`` and
``NEWSQ_HOST_CONCURRENCY=256`` (every page is on one host here).

Columns: pages/s over the work span (first URL taken to last URL done, so worker
start-up is excluded; the wall column includes it), CPU use (CPU seconds of every
newsq process and Redis, over the wall time), p50/p95 enqueue-to-done from the ledger,
Redis round trips (read events) and bytes per article, peak RSS per process role.
``--paced F`` adds a run whose URLs are enqueued one by one at F times the measured
0 ms throughput, for the latency of a steady load. ``--repeat N`` runs the whole table
N times against the same servers and ends with each round's figures against the
issue's targets and their medians (pages/s moves by 5-30 % between runs here), the
ratios both over the work span and over whole wall time (pages per second of each
command's wall time, exec to exit: what a user waits). newsq at 0 ms runs between the
CLI and the bare pool, the two anchors it is compared with.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import redis

from bench.speed_anchors import bare_pool, extract_only, fetch_only, trafilatura_cli
from bench.speed_pages import write_pages
from bench.speed_probe import (
    ProcessWatch,
    RedisCounters,
    cpu_seconds,
    latencies,
)
from bench.speed_serve import Served, delay_proxy, page_server
from bench.tables import percentile
from newsq.ledger import entry_pattern, read_counts
from newsq.workers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the table."""

    name: str
    pages: int
    wall: float
    span: float
    cpu: float
    p50: float = float("nan")
    p95: float = float("nan")
    round_trips: float = float("nan")
    kbytes: float = float("nan")
    rss: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.pages / self.span if self.span > 0 else 0.0


def newsq_env(redis_url: str, db: Path, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NEWSQ_BROKER_URL": redis_url,
        "NEWSQ_DATABASE_URL": f"sqlite:///{db}",
        "NEWSQ_KEY_PREFIX": prefix,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": "0",
        "NEWSQ_HOST_CONCURRENCY": "256",
        "NEWSQ_ROBOTS": "0",
        "NEWSQ_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    })  # fmt: skip
    return env


DETAIL: list[str] = []


def _measure_run(name: str, client: redis.Redis, prefix: str, body: object) -> Row:
    """Shared bookkeeping of a newsq run (``body`` runs it: (CPU seconds, its watch))."""
    before = RedisCounters.take(client)
    started, exec_at = time.perf_counter(), time.time()
    cpu_tree, watch = body()  # type: ignore[operator]
    wall = time.perf_counter() - started
    delta = RedisCounters.take(client).minus(before)
    done = latencies(client, prefix)
    span = _span(client, prefix)
    counts = read_counts(client, prefix)
    articles = counts.get("stored", 0) + counts.get("duplicate", 0)
    note = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
    if span.seconds:  # the wall outside the work span, and a lone URL's tail at its end
        note += (f"; exec to first URL {span.first - exec_at:.2f} s, last URL to exit "
                 f"{exec_at + wall - span.last:.2f} s, last URL {span.gap:.2f} s after the "
                 "one before")  # fmt: skip
    calls = sorted(delta.calls.items(), key=lambda kv: -kv[1])
    per = ", ".join(f"{k} {v / max(1, articles):.1f}" for k, v in calls[:16])
    DETAIL.append(
        f"{name}: Redis CPU {1000 * delta.cpu / max(1, articles):.2f} ms/article; "
        f"commands per article (incl. inside Lua): {per}"
    )
    roles = ", ".join(
        f"{k} {1000 * v / max(1, articles):.1f}" for k, v in watch.cpu_by_role().items()
    )
    DETAIL.append(f"{name}: CPU ms/article by process role: {roles}")
    DETAIL.append(f"{name}: pages done per tenth of the work span: {span.tenths}")
    return Row(
        name, len(done), wall, span.seconds, cpu_tree + delta.cpu,
        percentile(done, 0.5), percentile(done, 0.95),
        delta.reads / max(1, articles), delta.net_bytes / 1024 / max(1, articles),
        watch.peak_by_role(), note,
    )  # fmt: skip


class Span(NamedTuple):
    """A run's work span from the ledger: first URL taken and last done (unix times),
    how long after the one before it the last was done, and the pages done in each
    tenth of it (a slow start or a long tail shows there)."""

    first: float = 0.0
    last: float = 0.0
    gap: float = 0.0
    tenths: str = "-"

    @property
    def seconds(self) -> float:
        return self.last - self.first


def _span(client: redis.Redis, prefix: str) -> Span:
    keys = list(client.scan_iter(match=entry_pattern(prefix), count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "t_start", "t_done")
    rows = [(float(a), float(b)) for a, b in pipe.execute() if a and b]
    if not rows:
        return Span()
    first = min(a for a, _ in rows)
    dones = sorted(b for _, b in rows)
    last = dones[-1]
    tenths = [0] * 10
    for done in dones:
        tenths[min(9, int(10 * (done - first) / max(last - first, 1e-9)))] += 1
    gap = last - dones[-2] if len(dones) > 1 else 0.0
    return Span(first, last, gap, " ".join(map(str, tenths)))


def run_newsq(name: str, urls_file: Path, workers: int, redis_url: str, tmp: Path,
              extra: list[str], profile: Path | None = None) -> Row:  # fmt: skip
    """``newsq run`` over ``urls_file``; CPU from wait4 (the CLI and all it waited for)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    env = newsq_env(redis_url, tmp / f"{prefix}.db", prefix)
    client = redis.Redis.from_url(redis_url)
    cmd = [sys.executable, "-m", "newsq", "run", "--urls", str(urls_file)]
    if profile:
        out = profile / f"{name.replace(' ', '_').replace(',', '')}.txt"
        cmd = ["py-spy", "record", "--subprocesses", "--gil", "--format", "raw", "-r", "200", "-o",
               str(out), "--", *cmd]  # fmt: skip
    cmd += ["--workers", str(workers), "--timeout", "900", *extra]

    def body() -> tuple[float, ProcessWatch]:
        log = (tmp / f"{prefix}.log").open("wb")
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log)
        watch = ProcessWatch(proc.pid).start()
        _, status, usage = os.wait4(proc.pid, 0)
        watch.stop()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench: newsq run failed, see {tmp / f'{prefix}.log'}")
        return usage.ru_utime + usage.ru_stime, watch

    return _measure_run(name, client, prefix, body)


def run_paced(name: str, urls: list[str], rate: float, workers: int, redis_url: str,
              tmp: Path, fetch_threads: int) -> Row:  # fmt: skip
    """Local workers fed one URL at a time at ``rate`` per second."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    env = newsq_env(redis_url, tmp / f"{prefix}.db", prefix)
    client = redis.Redis.from_url(redis_url)
    script = ROOT / "bench" / "speed_paced.py"
    cmd = [sys.executable, str(script), str(rate), str(workers), str(fetch_threads), *urls]

    def body() -> tuple[float, ProcessWatch]:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        watch = ProcessWatch(proc.pid).start()
        _, status, usage = os.wait4(proc.pid, 0)
        watch.stop()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("bench: paced run failed")
        return usage.ru_utime + usage.ru_stime, watch

    return _measure_run(name, client, prefix, body)


def _fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)


def print_table(rows: list[Row], trafilatura_rate: float, bare_rate: float, base: float) -> None:
    print("| run | pages | wall s | pages/s | × trafilatura CLI | × bare pool | × newsq 0 ms "
          "| CPU cores busy | CPU ms/page | p50 / p95 s | Redis RT/article | Redis KB/article "
          "| peak RSS MB | states |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rss = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.rss.items()))
        print(
            f"| {r.name} | {r.pages} | {r.wall:.1f} | {r.rate:.1f} "
            f"| {r.rate / trafilatura_rate:.2f} | {r.rate / bare_rate:.2f} "
            f"| {_fmt(r.rate / base if base else float('nan'), '.2f')} | {r.cpu / r.wall:.2f} "
            f"| {1000 * r.cpu / max(1, r.pages):.1f} "
            f"| {_fmt(r.p50, '.2f')} / {_fmt(r.p95, '.2f')} | {_fmt(r.round_trips, '.1f')} "
            f"| {_fmt(r.kbytes, '.1f')} | {rss or '-'} | {r.note} |"
        )


def anchor_row(name: str, result: tuple[int, float, float], note: str = "") -> Row:
    pages, wall, cpu = result
    return Row(name, pages, wall, wall, cpu, note=note)


def _targets(rows: list[Row], traf: float, bare: float, base: float) -> list[float]:
    """One round's figures against the issue's targets, in :data:`SUMMARY`'s order."""
    nan = float("nan")
    runs = [r for r in rows if r.name.startswith("newsq run, ")]
    zero = next((r for r in runs if r.name == "newsq run, 0 ms"), None)
    slow = next((r for r in runs if r is not zero), None)
    paced = next((r for r in rows if r.name.startswith("newsq paced")), None)
    cli = next((r for r in rows if r.name.startswith("trafilatura CLI")), None)
    pool = next((r for r in rows if r.name.startswith("bare pool")), None)

    def whole(anchor: Row | None) -> float:
        """pages per second of whole wall time (start-up and end included), as a ratio"""
        if not (zero and anchor and zero.wall and anchor.wall and anchor.pages):
            return nan
        return (zero.pages / zero.wall) / (anchor.pages / anchor.wall)

    return [
        base,
        base / traf if zero else nan,
        base / bare if zero else nan,
        whole(cli),
        whole(pool),
        slow.rate / base if slow and base else nan,
        paced.p95 if paced else nan,
        zero.round_trips if zero else nan,
        max((v for r in runs for v in r.rss.values()), default=nan),
    ]


SUMMARY = ("newsq 0 ms pages/s", "span × trafilatura CLI", "span × bare pool",
           "whole wall × CLI", "whole wall × bare pool", "other latency × 0 ms",
           "paced p95 s", "Redis RT/article", "peak RSS MB")  # fmt: skip


def print_summary(rounds: list[list[float]]) -> None:
    """The figures of every round and their medians: the VM's run-to-run noise is
    ±5-30 % of pages/s, so one round alone can mislead."""
    print("| round | " + " | ".join(SUMMARY) + " |")
    print("|---" * (len(SUMMARY) + 1) + "|")
    for i, values in enumerate(rounds, 1):
        print(f"| {i} | " + " | ".join(_fmt(v, ".2f") for v in values) + " |")
    medians = [statistics.median(column) for column in zip(*rounds, strict=True)]
    print("| **median** | " + " | ".join(_fmt(v, ".2f") for v in medians) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__)
    parser.add_argument("--pages", type=int, default=605)
    parser.add_argument("--workers", type=int, default=2,
                        help="cores' worth: the anchors' processes")  # fmt: skip
    parser.add_argument("--newsq-workers", type=int, default=None,
                        help="newsq's local worker processes (default: W)")  # fmt: skip
    parser.add_argument("--latency", default="0,200", help="ms, comma-separated")
    parser.add_argument("--paced", type=float, default=0.5, help="0: no paced run")
    parser.add_argument("--fetch-threads", type=int, default=None)
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument("--newsq-args", default="", help="extra arguments for newsq run")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run newsq under py-spy, collapsed stacks into this folder",
    )
    parser.add_argument("--detail", action="store_true", help="Redis commands per article")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the table, then figures and medians"
    )
    args = parser.parse_args(argv)
    latencies_ms = [float(x) for x in args.latency.split(",") if x.strip()]
    extra = args.newsq_args.split()
    if args.newsq_workers is None:
        args.newsq_workers = args.workers
    if args.fetch_threads:
        extra += ["--fetch-threads", str(args.fetch_threads)]

    with tempfile.TemporaryDirectory(prefix="newsq-speed-") as name:
        tmp = Path(name)
        docroot = tmp / "www"
        paths = write_pages(docroot, args.pages)
        nginx = page_server(docroot, tmp)
        redis_server = RedisServer().start()
        proxies = {ms: delay_proxy(nginx, ms) for ms in latencies_ms if ms > 0}
        try:
            size = sum(f.stat().st_size for f in docroot.rglob("*.html")) / args.pages / 1024
            print(
                f"# newsq speed: {args.pages} pages (avg {size:.0f} KB), anchors on "
                f"{args.workers} processes, newsq on {args.newsq_workers} worker processes, "
                f"{os.cpu_count()} CPUs, server: {nginx.kind}\n"
            )
            rounds = []
            for i in range(args.repeat):
                if args.repeat > 1:
                    print(f"## round {i + 1} of {args.repeat}\n")
                rows, traf, bare, base = one_round(args, tmp, docroot, paths, nginx, proxies,
                                                   redis_server, latencies_ms, extra)  # fmt: skip
                print_table(rows, traf, bare, base)
                if args.detail:
                    print("\n" + "\n".join(DETAIL))
                DETAIL.clear()
                print()
                rounds.append(_targets(rows, traf, bare, base))
            if args.repeat > 1:
                print_summary(rounds)
        finally:
            for server in [nginx, *proxies.values()]:
                server.stop()
            redis_server.stop()
    return 0


Round = tuple[list[Row], float, float, float]


def one_round(args: argparse.Namespace, tmp: Path, docroot: Path, paths: list[str],
              nginx: Served, proxies: dict[float, Served], redis_server: RedisServer,
              latencies_ms: list[float], extra: list[str]) -> Round:  # fmt: skip
    """The anchors and the newsq runs once: (rows, CLI pages/s, bare pages/s, newsq 0 ms)."""
    rows: list[Row] = []
    urls = [nginx.base + p for p in paths]
    urls_file = tmp / "urls.txt"
    urls_file.write_text("\n".join(urls) + "\n")
    traf = bare = float("nan")
    base = 0.0

    def newsq_at(ms: float) -> None:
        nonlocal base
        target = proxies[ms] if ms > 0 else nginx
        run_urls = [target.base + p for p in paths]
        if ms > 0:
            cpu0 = cpu_seconds(target.pids())
            row = anchor_row(f"fetch only via delay proxy {ms:g} ms, 32 threads",
                             fetch_only(run_urls, 32))  # fmt: skip
            row.note = f"proxy CPU {cpu_seconds(target.pids()) - cpu0:.1f} s"
            rows.append(row)
        run_file = tmp / f"urls-{ms:g}.txt"
        run_file.write_text("\n".join(run_urls) + "\n")
        cpu0 = cpu_seconds(target.pids())
        row = run_newsq(f"newsq run, {ms:g} ms", run_file, args.newsq_workers,
                        redis_server.url, tmp, extra, args.profile)  # fmt: skip
        row.note += f"; server CPU {cpu_seconds(target.pids()) - cpu0:.1f} s"
        rows.append(row)
        if ms == 0:
            base = row.rate

    # newsq at 0 ms runs between the two anchors it is compared with: this VM's speed
    # drifts by 10-30 % over minutes, and a ratio of runs far apart would carry it
    if not args.skip_anchors:
        cpu0 = cpu_seconds(nginx.pids())
        row = anchor_row("trafilatura CLI --parallel W, sleep 0",
                         trafilatura_cli(urls_file, args.workers, tmp))  # fmt: skip
        rows.append(row)
        traf = row.rate
        server_cpu = cpu_seconds(nginx.pids()) - cpu0
    if 0 in latencies_ms:
        newsq_at(0)
    if not args.skip_anchors:
        cpu0 = cpu_seconds(nginx.pids())
        row = anchor_row("bare pool: W procs, httpx.Client + trafilatura.extract",
                         bare_pool(urls, args.workers))  # fmt: skip
        rows.append(row)
        bare = row.rate
        htmls = [(docroot / p.lstrip("/")).read_text("utf-8") for p in paths]
        for which, fn in (("trafilatura", "trafilatura.extract"),
                          ("newsq", "newsq clean.extract")):  # fmt: skip
            result = extract_only(htmls, args.workers, which)
            rows.append(anchor_row(f"extract only, {fn}, W procs", result))
        server_cpu += cpu_seconds(nginx.pids()) - cpu0
        print(f"nginx CPU during the anchors: {server_cpu:.1f} s\n")
    for ms in latencies_ms:
        if ms != 0:
            newsq_at(ms)
    if args.paced > 0 and base:
        rate = base * args.paced
        row = run_paced(f"newsq paced {rate:.0f}/s, 0 ms", urls, rate, args.newsq_workers,
                        redis_server.url, tmp, args.fetch_threads or 0)  # fmt: skip
        rows.append(row)
    return rows, traf, bare, base


if __name__ == "__main__":
    sys.exit(main())
