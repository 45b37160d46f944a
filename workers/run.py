"""``newsq run``: enqueue, run local workers until every URL is done, summarise.

``newsq demo`` runs the same on its sample site; ``newsq enqueue`` shares the intake.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque

from rich.console import Console

from newsq.config.settings import Settings
from newsq.feeds.intake import Intake, enqueue, gather
from newsq.feeds.send import send_fetches
from newsq.ledger import Ledger
from newsq.records import TERMINAL
from newsq.store.database import Store
from newsq.workers.common import open_ledger
from newsq.workers.embedded import LocalCluster


def submit(settings: Settings, args: argparse.Namespace, store: Store) -> tuple[Intake, Ledger]:
    from newsq.config.celery import make_app
    from newsq.fetch.client import Fetcher

    ledger = open_ledger(settings, "enqueue")
    fetcher = Fetcher(settings)
    try:
        raw, problems = gather(fetcher, args.feed, args.urls, args.url)
    finally:
        fetcher.close()
    new: list[str] = []
    intake = enqueue(ledger, store, raw, send=new.append)
    send_fetches(make_app(settings), new, settings.fetch_batch)
    intake.feed_errors = problems
    for feed, error in problems:
        print(f"newsq: feed {feed}: {error}", file=sys.stderr)
    return intake, ledger


class _Rate:
    """URLs finished per second over the last minute, and the time left at that rate."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> None:
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    @property
    def per_second(self) -> float:
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, left: int) -> str:
        rate = self.per_second
        if left == 0:
            return "0:00:00"
        return time.strftime("%H:%M:%S", time.gmtime(left / rate)) if rate > 0 else "?"


def wait_until_done(ledger: Ledger, urls: list[str], cluster: LocalCluster, timeout: float,
                    console: Console, chunk: int = 2000, every: float = 0.5) -> bool:  # fmt: skip
    """Poll the ledger every ``every`` seconds until every URL is terminal; True when
    all are.

    On a terminal: a progress bar with the rate (URLs/s over the last minute) and the
    time left; otherwise one plain line on stderr every 5 s. Each poll reads at most
    ``chunk`` pending URLs (a rolling window) by keys hashed once, so a run of a
    million URLs polls cheaply and leaves the CPU to the workers.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    deadline = time.monotonic() + timeout
    total = len(urls)
    live = console.is_terminal
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[rate]} URLs/s"),
                        TextColumn("ETA {task.fields[eta]}"), console=console,
                        disable=not live)  # fmt: skip
    pending = [ledger.key(url) for url in urls]
    cursor = 0
    rate = _Rate()
    last_line = 0.0
    with progress:
        task = progress.add_task("processing", total=total, rate="-", eta="?")
        while pending:
            cursor = cursor if cursor < len(pending) else 0
            window = pending[cursor : cursor + chunk]
            states = ledger.states_at(window)
            left = [u for u, s in zip(window, states, strict=True) if s not in TERMINAL]
            pending[cursor : cursor + chunk] = left
            cursor += len(left)
            done = total - len(pending)
            rate.add(done)
            progress.update(task, completed=done, rate=f"{rate.per_second:.1f}",
                            eta=rate.eta(len(pending)))  # fmt: skip
            if not live and time.monotonic() - last_line > 5:
                print(f"newsq: {done}/{total} URLs done, {rate.per_second:.1f}/s, "
                      f"ETA {rate.eta(len(pending))}", file=sys.stderr)  # fmt: skip
                last_line = time.monotonic()
            if not pending:
                break
            if time.monotonic() > deadline:
                return False
            cluster.check_workers()
            time.sleep(every)
    return True


def run_pipeline(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from newsq.workers.report import print_summary, summary_data

    store = Store.from_url(settings.database_url)
    started = time.monotonic()
    with LocalCluster(settings, workers=args.workers,
                      fetch_threads=getattr(args, "fetch_threads", 32),
                      layout=getattr(args, "layout", "combined")) as cluster:  # fmt: skip
        intake, ledger = submit(cluster.settings, args, store)
        if intake.new:
            cluster.start_workers()
        finished = wait_until_done(ledger, intake.new, cluster, args.timeout, console)
        cluster.stop_workers()
        data = summary_data(store, intake.new, ledger, time.monotonic() - started,
                            invalid=len(intake.invalid), known=len(intake.known))  # fmt: skip
        stories = store.stories(limit=50)
    print_summary(data, stories, console)
    if not finished:
        print(f"newsq: timed out after {args.timeout:g}s with URLs unfinished", file=sys.stderr)
        return 1
    return 0
