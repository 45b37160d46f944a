"""Real worker processes for the fault-injection suite, and the end-state check.

:class:`Workers` starts ``python -m newsq worker`` processes (a thread-pool fetch
worker and a prefork process worker, each in its own process group) and kills them
the ways production does; :func:`check_end_state` asserts what every case must end
with: every URL in exactly one terminal state, none lost, none stored twice, none
wrongly failed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import sqlalchemy as sa

from newsq.ledger import Ledger
from newsq.records import TERMINAL
from tests.faults.site import Site

ROOT = Path(__file__).resolve().parents[2]
FINISH = 180  # seconds a case may take after its fault before it counts as lost
CHILD_DEATHS = {
    "children_exited": "exited with 'signal 9",  # billiard: a pool child died
    "worker_lost": "WorkerLostError",  # lines naming the error of a task lost with it
}


def newsq(*args: str, env: dict[str, str],
          timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the real ``newsq`` CLI; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "newsq", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, cwd=ROOT)  # fmt: skip


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc); [] when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in raw.split()]


def holder_of(port: int, pids: list[int]) -> int | None:
    """The one of ``pids`` whose TCP socket has local port ``port`` (the process that is
    fetching through that connection); None when none has."""
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.laddr and c.laddr.port == port for c in connections):
            return pid
    return None


@dataclass
class Workers:
    """Worker processes for one test; ``logs`` collects their output."""

    env: dict[str, str]
    logs: Path
    fetch_pool: str = "threads"
    fetch_concurrency: int = 8
    process_concurrency: int = 2
    beat: bool = False
    """Run Celery beat in the fetch worker (periodic re-enqueue of stuck URLs)."""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    generation: int = 0

    def start(self) -> None:
        self.generation += 1
        specs = {
            "fetch": ["--queues", "fetch", "--pool", self.fetch_pool,
                      "--concurrency", str(self.fetch_concurrency),
                      *(["--beat"] if self.beat else [])],
            "process": ["--queues", "process", "--pool", "prefork",
                        "--concurrency", str(self.process_concurrency)],
        }  # fmt: skip
        for name, spec in specs.items():
            log = open(self.logs / f"{name}-{self.generation}.log", "wb")  # noqa: SIM115
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "newsq", "worker", *spec], env=self.env, cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            log.close()

    def kill(self, sig: int = signal.SIGKILL,
             names: tuple[str, ...] = ("fetch", "process")) -> None:  # fmt: skip
        """Send ``sig`` to the whole process group of each named worker."""
        for name in names:
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, sig)

    def wait(self, timeout: float, names: tuple[str, ...] = ("fetch", "process")) -> float:
        """Seconds until every named worker exited; raises TimeoutExpired after ``timeout``."""
        started = time.monotonic()
        for name in names:
            self.procs[name].wait(max(0.1, timeout - (time.monotonic() - started)))
        return time.monotonic() - started

    def revive(self) -> int:
        """Restart the workers that exited, as a process supervisor would; returns how many."""
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            alive = {n: p for n, p in self.procs.items() if n not in dead}
            self.start()
            for name, proc in alive.items():  # keep the live ones, drop their new twins
                os.killpg(self.procs[name].pid, signal.SIGKILL)
                self.procs[name].wait()
                self.procs[name] = proc
        return len(dead)

    def pool_children(self, name: str = "process") -> list[int]:
        return children(self.procs[name].pid)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = {}

    def log_text(self) -> str:
        """Every worker's output so far; complete only once they stopped (``stop``)."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def enqueue(site: Site, env: dict[str, str], tmp: Path) -> None:
    """Enqueue every URL of ``site`` with the real ``newsq enqueue``."""
    listing = tmp / "urls.txt"
    listing.write_text("\n".join(site.urls) + "\n")
    done = newsq("enqueue", "--urls", str(listing), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"enqueued {len(site.urls)},"), done.stdout


def wait_for(ledger: Ledger, urls: list[str], *, done: int, timeout: float) -> int:
    """Wait until at least ``done`` of ``urls`` are terminal; returns how many are."""
    deadline = time.monotonic() + timeout
    while True:
        finished = sum(s in TERMINAL for s in ledger.states(urls))
        if finished >= done or time.monotonic() > deadline:
            return finished
        time.sleep(0.2)


def ledger_for(env: dict[str, str]) -> Ledger:
    client = redis.Redis.from_url(env["NEWSQ_BROKER_URL"], retry_on_timeout=True)
    return Ledger(client, env["NEWSQ_KEY_PREFIX"])


def unacked_urls(client: redis.Redis, prefix: str) -> set[str]:
    """URLs of the messages taken by some worker and not yet acknowledged."""
    out = set()
    for raw in client.hvals(f"{prefix}:q:unacked"):
        message = json.loads(raw)[0]
        body = json.loads(base64.b64decode(message["body"]))
        urls = body[0][0]  # newsq.fetch: a URL; newsq.fetch_many: a list of them
        out.update(urls if isinstance(urls, list) else [urls])
    return out


def check_end_state(site: Site, env: dict[str, str], *, poison_ok: Set[str] = frozenset(),
                    ledger: Ledger | None = None) -> dict[str, int]:  # fmt: skip
    """Assert the invariants every fault case must keep; returns counts by state."""
    ledger = ledger or ledger_for(env)
    urls = site.urls
    states = dict(zip(urls, ledger.states(urls), strict=True))
    lost = sorted(u for u, s in states.items() if s not in TERMINAL)
    detail = [ledger.get(u) for u in lost[:3]]
    assert not lost, f"{len(lost)} URLs never reached a terminal state: {detail}"

    engine = sa.create_engine(env["NEWSQ_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT url, story_id, duplicate_of FROM articles")).all()
        stored: dict[str, str] = {
            r.url: r.state for r in conn.execute(sa.text("SELECT url, state FROM urls"))
        }
    engine.dispose()

    # none stored twice: one article row per URL, one first copy per story
    per_url: dict[str, int] = {}
    for row in rows:
        per_url[row.url] = per_url.get(row.url, 0) + 1
    twice = sorted(u for u, n in per_url.items() if n > 1)
    assert not twice, f"stored twice: {twice[:5]}"
    firsts: dict[str, int] = {}
    for row in rows:
        if row.duplicate_of is None:
            firsts[row.story_id] = firsts.get(row.story_id, 0) + 1
    assert all(n == 1 for n in firsts.values()), "a story has two first copies"

    # the ledger, the store's URL records and the truth agree
    expected_failed = site.expected_failed() | set(poison_ok)
    failed = {u for u, s in states.items() if s in ("failed", "skipped")}
    assert failed == expected_failed, f"wrongly failed: {sorted(failed - expected_failed)[:5]}"
    for url, state in states.items():
        assert stored.get(url) == state, f"{url}: ledger {state}, store {stored.get(url)}"
    story_ids: dict[int, set[str]] = {}
    by_url = {r.url: r.story_id for r in rows}
    for url in urls:
        path = url[len(site.base) :]
        if path in site.story_of and url not in poison_ok:
            assert states[url] in ("stored", "duplicate"), f"{url}: {states[url]}"
            story_ids.setdefault(site.story_of[path], set()).add(by_url[url])
    assert all(len(ids) == 1 for ids in story_ids.values()), "a story split in two"
    assert len(firsts) == len({next(iter(ids)) for ids in story_ids.values()})
    counts: dict[str, int] = {}
    for state in states.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts


def report(case: str, **figures: object) -> None:
    """One ``FAULTS {json}`` line on stdout, for ``bench/faults_report.py``."""
    print("FAULTS " + json.dumps({"case": case, **figures}), flush=True)


def finish(site: Site, env: dict[str, str], case: str, started: float, *,
           workers: Workers | None = None, log_counts: dict[str, str] | None = None,
           poison_ok: Set[str] = frozenset(), **figures: Any) -> dict[str, Any]:  # fmt: skip
    """Wait for the batch to end, check its end state and report the case's figures.

    ``log_counts`` maps a figure's name to a log line fragment whose occurrences it
    counts; the workers are stopped first so their logs are whole. Returns the figures.
    """
    wait_for(ledger_for(env), site.urls, done=len(site.urls), timeout=FINISH)
    try:
        counts = check_end_state(site, env, poison_ok=poison_ok)
    except AssertionError as exc:  # the table shows a failed case too
        seconds = round(time.monotonic() - started, 1)
        report(case, seconds=seconds, error=str(exc).splitlines()[0][:200], **figures)
        raise
    if log_counts:
        assert workers is not None, "log_counts needs the workers whose logs to read"
        workers.stop()
        text = workers.log_text()
        figures.update({name: text.count(needle) for name, needle in log_counts.items()})
    out = {"seconds": round(time.monotonic() - started, 1), **counts, **figures}
    report(case, **out)
    return out
