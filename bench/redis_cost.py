"""Redis's work per stored article, by script and command, for two checkouts side by side.

    python -m bench.redis_cost [--pages 605] [--workers 2] [--rounds 3] [--before DIR]
                               [--after DIR] [--no-parts]

``--before DIR`` is another checkout of newsq (``git worktree add /work/tmp/rc-old
<hash>``), ``--after DIR`` the one measured after it (default: this one). Each round
runs ``newsq run --urls FILE --workers W`` of every checkout, in alternating order, on
the speed bench's pages (:mod:`bench.speed_pages`, served on loopback by
:mod:`bench.speed_serve`) with the speed bench's settings (no host rate, robots off),
each against a fresh private redis-server started here. A plain round gives the totals
per stored article: Redis CPU (``INFO`` ``used_cpu_user + used_cpu_sys``, and
``/proc/PID/stat`` of the server as a check) and, of it, what the idle server spends in
the same wall time (its housekeeping, measured for a few seconds before the run);
commands (``INFO commandstats``, which counts the commands run inside Lua scripts
too), round trips (``total_reads_processed``: a pipeline is one) and bytes on the wire.
One more run per checkout has the slow log record every command
(``slowlog-log-slower-than 0``): each top-level command and script call, with the
commands it ran inside, goes to its part (a script by its SHA1, a ledger call by its
operation, any other command by the key it names) with the microseconds Redis spent
executing it. That run's CPU is not counted (the slow log costs some, most for the
scripts that run many commands).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.speed import newsq_env
from bench.speed_pages import write_pages
from bench.speed_serve import page_server
from bench.startup import shim
from newsq.ledger import read_counts
from newsq.workers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
IDLE_SECONDS = 3.0
BENCH_CLIENT = "redis-cost-bench"  # the bench's own commands are left out of the parts


@dataclass
class Checkout:
    """One newsq checkout: its name, PYTHONPATH and its Lua scripts by SHA1."""

    name: str
    tree: Path
    pythonpath: Path
    scripts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, tree: Path, work: Path) -> Checkout:
        path = tree if tree == ROOT else shim(tree, work / f"shim-{name}")
        scripts = {}
        for lua in sorted((tree / "newsq").rglob("*.lua")):
            sha = hashlib.sha1(lua.read_text(encoding="utf-8").encode()).hexdigest()
            scripts[sha] = lua.stem
        return cls(name, tree, path, scripts)


@dataclass
class Totals:
    """One run's totals per stored article."""

    stored: int
    cpu_ms: float
    idle_ms: float  # of it, what the idle server spends in the same wall time
    proc_cpu_ms: float
    commands: float
    round_trips: float
    kbytes: float
    wall: float


@dataclass
class Part:
    calls: int = 0  # top-level commands and script calls
    commands: int = 0  # the same, plus every command run inside a script
    usec: int = 0  # execution time, as the slow log has it
    names: dict[str, int] = field(default_factory=dict)  # commands run, by name

    def add(self, names: list[str], usec: int, calls: int = 1) -> None:
        self.calls += calls
        self.commands += len(names)
        self.usec += usec
        for name in names:
            self.names[name] = self.names.get(name, 0) + 1


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _counters(client: redis.Redis) -> tuple[float, int, int, int]:
    cpu, stats = client.info("cpu"), client.info("stats")
    commands = sum(int(v["calls"]) for v in client.info("commandstats").values())
    net = int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])
    used = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return used, commands, int(stats["total_reads_processed"]), net


def run_once(checkout: Checkout, urls_file: Path, workers: int, tmp: Path,
             slowlog: bool) -> tuple[Totals, dict[str, Part]]:  # fmt: skip
    """One ``newsq run`` of ``checkout`` against a fresh Redis: its totals, and its
    parts when ``slowlog``."""
    server = RedisServer().start()
    assert server.proc is not None
    client = redis.Redis.from_url(server.url, client_name=BENCH_CLIENT)
    try:
        if slowlog:
            client.config_set("slowlog-max-len", 10_000_000)
            client.config_set("slowlog-log-slower-than", 0)
        prefix = f"rc{uuid.uuid4().hex[:8]}"
        env = newsq_env(server.url, tmp / f"{prefix}.db", prefix)
        env["PYTHONPATH"] = str(checkout.pythonpath)
        cmd = [sys.executable, "-m", "newsq", "run", "--urls", str(urls_file),
               "--workers", str(workers), "--timeout", "900"]  # fmt: skip
        idle0 = _counters(client)[0]
        time.sleep(IDLE_SECONDS)  # the server's own housekeeping (serverCron) alone
        idle_rate = (_counters(client)[0] - idle0) / IDLE_SECONDS
        if slowlog:
            client.slowlog_reset()
        before, proc0 = _counters(client), _proc_cpu(server.proc.pid)
        started = time.perf_counter()
        with (tmp / f"{prefix}.log").open("wb") as log:
            # not from the checkout's folder: its newsq/ there, first on sys.path, lacks
            # the config/, tasks/ and workers/ that its PYTHONPATH (a shim) holds
            done = subprocess.run(cmd, env=env, cwd=tmp, stdout=log, stderr=log)
        wall = time.perf_counter() - started
        after, proc1 = _counters(client), _proc_cpu(server.proc.pid)
        if done.returncode != 0:
            raise SystemExit(f"bench: newsq run of {checkout.name} failed: {tmp / prefix}.log")
        # a checkout of before the ledger buckets kept one counts hash
        stored = read_counts(client, prefix)["stored"] + int(
            client.hget(f"{{{prefix}}}:counts", "stored") or 0
        )
        n = max(1, stored)
        totals = Totals(
            stored, 1000 * (after[0] - before[0]) / n, 1000 * idle_rate * wall / n,
            1000 * (proc1 - proc0) / n,
            (after[1] - before[1]) / n, (after[2] - before[2]) / n,
            (after[3] - before[3]) / 1024 / n, wall,
        )  # fmt: skip
        parts = attribute(client, checkout, prefix) if slowlog else {}
        return totals, parts
    finally:
        client.close()
        server.stop()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _key_part(key: str, prefix: str) -> str:
    """The part a command belongs to, by the key it names."""
    if key.startswith(f"{{{prefix}:dedup}}"):
        return "dedup"
    if key.startswith(f"{{{prefix}:l:"):
        return "ledger (direct)"
    if key.startswith(f"{{{prefix}}}:tput"):
        return "throughput"
    if key.startswith(f"{{{prefix}}}"):
        return "ledger (direct)"
    for mark, part in ((":q:", "celery (broker)"), (":body:", "page hand-off"),
                       (":polite:", "politeness"), (":robots", "politeness"),
                       (":frontier", "frontier"), (":bp:", "boilerplate")):  # fmt: skip
        if key.startswith((prefix, f"{{{prefix}:fetch}}")) and mark in key:
            return part
    shape = re.sub(r"[0-9a-f]{6,}|\d+", "*", key.removeprefix(prefix))
    return f"other key {shape[:40]}"


KNOWN_PARTS = frozenset({"dedup", "politeness", "frontier", "boilerplate"})
NO_KEY = frozenset({"ping", "info", "client", "script", "select", "hello", "command",
                    "config", "slowlog", "time", "echo", "readonly"})  # fmt: skip


def _script_part(checkout: Checkout, args: list[str], prefix: str) -> str:
    name = checkout.scripts.get(args[1].lower())
    if name is None:  # a script made at run time (dedup's has its parameters written
        # in) or not of a .lua file of its own: by the first key it names
        first = args[3] if args[2].isdigit() and int(args[2]) > 0 and len(args) > 3 else ""
        part = _key_part(first, prefix)
        return part if part in KNOWN_PARTS else f"{part} (script {args[1][:8]})"
    if name != "ledger":
        return name
    numkeys = int(args[2]) if args[2].isdigit() else 0
    at = 3 + numkeys
    if at >= len(args) or args[at].startswith("..."):
        return "ledger enqueue"  # a batch: its operation is past the slow log's 32 args
    op = args[at]
    if op in ("move", "begin") and at + 1 < len(args):
        op += " " + args[at + 1]
    return f"ledger {op}"


def attribute(client: redis.Redis, checkout: Checkout, prefix: str) -> dict[str, Part]:
    """The slow log of a run, command by command, summed by part."""
    client.config_set("slowlog-log-slower-than", -1)
    raw = client.execute_command("SLOWLOG", "GET", "-1", NEVER_DECODE=True)
    parts: dict[str, Part] = defaultdict(Part)
    inner: list[str] = []  # the commands of the script logged next
    multi: dict[str, int] = {}  # client -> MULTIs waiting for their first keyed command
    for entry in sorted(raw, key=lambda e: int(e[0])):
        usec, args = int(entry[2]), [_text(a) for a in entry[3]]
        peer = _text(entry[4]) if len(entry) > 4 else ""
        name = _text(entry[5]) if len(entry) > 5 else ""
        if name == BENCH_CLIENT or not args:
            continue
        cmd = args[0].lower()
        if peer.startswith("?"):  # run inside a script: its call is logged after it
            inner.append(cmd)
            continue
        if cmd in ("evalsha", "eval", "evalsha_ro", "eval_ro") and len(args) > 2:
            parts[_script_part(checkout, args, prefix)].add([cmd, *inner], usec)
            inner = []
            continue
        if cmd == "multi":
            multi[peer] = multi.get(peer, 0) + 1
            continue
        if cmd in NO_KEY or len(args) < 2:
            parts["other (connections, scripts, info)"].add([cmd], usec)
            continue
        part = parts[_key_part(args[1], prefix)]
        waiting = multi.pop(peer, 0)  # a MULTI, and its EXEC (which the slow log skips)
        part.add(["multi", "exec"] * waiting, 0, calls=2 * waiting)
        part.add([cmd], usec)
    return parts


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_totals(names: list[str], rounds: dict[str, list[Totals]]) -> None:
    rows = (
        ("Redis CPU ms / stored article (INFO)", "cpu_ms", ".3f"),
        ("  of it, the idle server's own in that time", "idle_ms", ".3f"),
        ("Redis CPU ms / stored article (/proc)", "proc_cpu_ms", ".2f"),
        ("Redis commands / stored article (incl. inside Lua)", "commands", ".1f"),
        ("round trips / stored article", "round_trips", ".2f"),
        ("KB on the wire / stored article", "kbytes", ".2f"),
        ("newsq run wall s", "wall", ".1f"),
    )
    head = " | ".join(names)
    print(f"| per stored article (median of {len(rounds[names[0]])} rounds; min-max) | {head} |"
          + (" after ÷ before |" if len(names) == 2 else ""))  # fmt: skip
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for label, attr, spec in rows:
        cells, meds = [], []
        for name in names:
            values = [getattr(t, attr) for t in rounds[name]]
            meds.append(_median(values))
            cells.append(f"{meds[-1]:{spec}} ({min(values):{spec}}-{max(values):{spec}})")
        ratio = f" {meds[1] / meds[0]:.2f} |" if len(names) == 2 and meds[0] else ""
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)
    stored = ", ".join(f"{n} {sorted({t.stored for t in rounds[n]})}" for n in names)
    print(f"\nstored articles per run: {stored}")


def print_parts(
    names: list[str], parts: dict[str, dict[str, Part]], stored: dict[str, int]
) -> None:
    keys = sorted({k for p in parts.values() for k in p},
                  key=lambda k: -max(parts[n].get(k, Part()).commands for n in names))  # fmt: skip
    cols = " | ".join(f"{n}: calls / commands / exec µs" for n in names)
    print(f"| part (per stored article, slow-log run) | {cols} |")
    print("|---" * (len(names) + 1) + "|")
    sums = {n: Part() for n in names}
    for key in keys:
        cells = []
        for n in names:
            p, s = parts[n].get(key, Part()), max(1, stored[n])
            sums[n].calls += p.calls
            sums[n].commands += p.commands
            sums[n].usec += p.usec
            cells.append(f"{p.calls / s:.2f} / {p.commands / s:.1f} / {p.usec / s:.1f}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    cells = [f"{sums[n].calls / max(1, stored[n]):.2f} / {sums[n].commands / max(1, stored[n]):.1f}"
             f" / {sums[n].usec / max(1, stored[n]):.1f}" for n in names]  # fmt: skip
    print("| **all** | " + " | ".join(cells) + " |")
    print()
    for key in keys[:12]:
        for n in names:
            p, s = parts[n].get(key, Part()), max(1, stored[n])
            top = sorted(p.names.items(), key=lambda kv: -kv[1])[:12]
            if top:
                print(f"{n}, {key}: " + ", ".join(f"{c} {v / s:.1f}" for c, v in top))


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m bench.redis_cost", description=__doc__, formatter_class=raw
    )
    parser.add_argument("--pages", type=int, default=605)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="plain rounds per checkout")
    parser.add_argument("--before", type=Path, default=None, help="another checkout")
    parser.add_argument("--after", type=Path, default=ROOT,
                        help="the checkout measured after (default: this one)")  # fmt: skip
    parser.add_argument("--no-parts", action="store_true", help="skip the slow-log runs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="newsq-rcost-") as name:
        tmp = Path(name)
        checkouts = [Checkout.of("after", args.after.resolve(), tmp)]
        if args.before is not None:
            checkouts.insert(0, Checkout.of("before", args.before.resolve(), tmp))
        names = [c.name for c in checkouts]
        docroot = tmp / "www"
        paths = write_pages(docroot, args.pages)
        server = page_server(docroot, tmp)
        urls_file = tmp / "urls.txt"
        urls_file.write_text("".join(server.base + p + "\n" for p in paths))
        rev = {c.name: _revision(c.tree) for c in checkouts}
        print(f"# Redis cost: {args.pages} pages, newsq run --workers {args.workers}, "
              f"{os.cpu_count()} CPUs, server: {server.kind}; "
              + ", ".join(f"{n} = {rev[n]}" for n in names) + "\n")  # fmt: skip
        rounds: dict[str, list[Totals]] = {n: [] for n in names}
        parts: dict[str, dict[str, Part]] = {}
        stored: dict[str, int] = {}
        try:
            for i in range(args.rounds):
                order = checkouts if i % 2 == 0 else checkouts[::-1]
                for checkout in order:
                    totals, _ = run_once(checkout, urls_file, args.workers, tmp, slowlog=False)
                    rounds[checkout.name].append(totals)
                    print(f"round {i + 1} {checkout.name}: {totals.cpu_ms:.3f} ms CPU, "
                          f"{totals.commands:.1f} commands, {totals.round_trips:.2f} round trips "
                          f"per stored article ({totals.stored} stored)", flush=True)  # fmt: skip
            if not args.no_parts:
                for checkout in checkouts:
                    totals, got = run_once(checkout, urls_file, args.workers, tmp, slowlog=True)
                    parts[checkout.name], stored[checkout.name] = got, totals.stored
        finally:
            server.stop()
        print()
        print_totals(names, rounds)
        if parts:
            print()
            print_parts(names, parts, stored)
    return 0


def _revision(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--", "newsq"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return done.stdout.strip() + (" + edits" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
