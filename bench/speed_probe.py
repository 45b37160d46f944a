"""What the speed benchmark measures around a run: Redis counters, process CPU and
peak RSS, and per-URL enqueue-to-terminal latency from the ledger."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil
import redis

from newsq.ledger import entry_pattern
from newsq.records import TERMINAL


@dataclass(frozen=True)
class RedisCounters:
    """A snapshot of the counters the benchmark subtracts."""

    reads: int  # read events = client round trips (a pipeline is one)
    commands: int  # commands, including those run inside Lua scripts
    net_bytes: int
    cpu: float
    calls: dict[str, int] = field(default_factory=dict)

    @classmethod
    def take(cls, client: redis.Redis) -> RedisCounters:
        stats = client.info("stats")
        cpu = client.info("cpu")
        calls = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in client.info("commandstats").items()
        }
        return cls(
            reads=int(stats["total_reads_processed"]),
            commands=int(stats["total_commands_processed"]),
            net_bytes=int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"]),
            cpu=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            calls=calls,
        )

    def minus(self, before: RedisCounters) -> RedisCounters:
        calls = {k: v - before.calls.get(k, 0) for k, v in self.calls.items()}
        return RedisCounters(
            self.reads - before.reads,
            self.commands - before.commands,
            self.net_bytes - before.net_bytes,
            self.cpu - before.cpu,
            {k: v for k, v in calls.items() if v},
        )


def _peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _label(proc: psutil.Process, roots: dict[int, str]) -> str:
    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.ppid()
    except psutil.Error:
        return "?"
    if "--queues" not in cmd:
        return "cli"
    queues = cmd.split("--queues", 1)[1].split()[0]
    return f"{queues} child" if parent in roots else f"{queues} worker"


class ProcessWatch:
    """Samples a process tree: peak RSS (VmHWM) and CPU seconds per process."""

    def __init__(self, root: int, every: float = 0.2) -> None:
        self.root = root
        self.every = every
        self.peak: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.labels: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ProcessWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [psutil.Process(self.root)]
                procs += procs[0].children(recursive=True)
            except psutil.NoSuchProcess:
                return
            roots = {p.pid: "" for p in procs if self.labels.get(p.pid, "").endswith("worker")}
            for proc in procs:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                if proc.pid not in self.labels or self.labels[proc.pid] == "cli":
                    self.labels[proc.pid] = _label(proc, roots)
                self.cpu[proc.pid] = times.user + times.system
                self.peak[proc.pid] = max(self.peak.get(proc.pid, 0.0), _peak_rss_mb(proc.pid))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of the processes of each role (as last sampled)."""
        out: dict[str, float] = {}
        for pid, seconds in self.cpu.items():
            role = self.labels.get(pid, "?")
            out[role] = out.get(role, 0.0) + seconds
        return out

    def peak_by_role(self) -> dict[str, float]:
        """Largest peak RSS (MB) among the processes of each role."""
        out: dict[str, float] = {}
        for pid, mb in self.peak.items():
            role = self.labels.get(pid, "?")
            out[role] = max(out.get(role, 0.0), mb)
        return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds used so far by the live processes ``pids``."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def latencies(client: redis.Redis, prefix: str) -> list[float]:
    """Enqueue-to-terminal seconds of every terminal URL in the ledger."""
    out = []
    keys = list(client.scan_iter(match=entry_pattern(prefix), count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "state", "t_enq", "t_upd")
    for state, t_enq, t_upd in pipe.execute():
        if state and state.decode() in TERMINAL and t_enq and t_upd:
            out.append(float(t_upd) - float(t_enq))
    return out
