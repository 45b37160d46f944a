"""``newsq run``: enqueue, run local workers until every URL is done, summarise.

``newsq demo`` runs the same on its sample site; ``newsq enqueue`` shares the intake.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from newsq.api import connect_ledger, enqueue, wait_for
from newsq.config.settings import Settings
from newsq.errors import INVALID_URL
from newsq.workers.early import resume_gc
from newsq.workers.embedded import LocalCluster, resumed

if TYPE_CHECKING:  # loaded once the workers are starting (run_pipeline)
    from rich.console import Console

    from newsq.feeds.intake import Intake
    from newsq.ledger import Ledger
    from newsq.store.database import Store


def submit(args: argparse.Namespace, settings: Settings) -> Intake:
    """Enqueue the command's ``--feed``, ``--urls`` and URLs (:func:`newsq.api.enqueue`);
    a feed that could not be read and an invalid URL are one line each on stderr, and so
    is the count of feed entries left out for their age."""
    from newsq.feeds.intake import too_old_note

    timeout = getattr(args, "timeout", None)  # newsq run's bounds the feeds' discovery too
    intake = enqueue(args.url, feeds=args.feed, url_files=args.urls, settings=settings,
                     timeout=timeout)  # fmt: skip
    for feed, error in intake.feed_errors:
        print(f"newsq: feed {feed}: {error}", file=sys.stderr)
    for raw in intake.invalid:
        print(f"newsq: {raw[:200]}: {INVALID_URL}", file=sys.stderr)
    if intake.too_old:  # an archive's worth not enqueued: say so, it is no error
        print(f"newsq: feeds: {too_old_note(intake.too_old, settings)}", file=sys.stderr)
    return intake


def rejected(intake: Intake) -> bool:
    """True when some input was refused (an invalid URL, a feed not read)."""
    return bool(intake.invalid or intake.feed_errors)


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
                    console: Console, every: float = 0.5) -> bool:  # fmt: skip
    """Wait until every URL is terminal (:func:`newsq.api.wait_for`), True when all are,
    while the local workers live.

    On a terminal: a progress bar with the rate (URLs/s over the last minute) and the
    time left; otherwise one plain line on stderr every 5 s.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    live = console.is_terminal
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[rate]} URLs/s"),
                        TextColumn("ETA {task.fields[eta]}"), console=console,
                        disable=not live)  # fmt: skip
    task = progress.add_task("processing", total=len(urls), rate="-", eta="?")
    rate = _Rate()
    last_line = 0.0

    def show(done: int, total: int) -> None:
        nonlocal last_line
        rate.add(done)
        progress.update(task, completed=done, rate=f"{rate.per_second:.1f}",
                        eta=rate.eta(total - done))  # fmt: skip
        if not live and time.monotonic() - last_line > 5:
            print(f"newsq: {done}/{total} URLs done, {rate.per_second:.1f}/s, "
                  f"ETA {rate.eta(total - done)}", file=sys.stderr)  # fmt: skip
            last_line = time.monotonic()
        if done < total:
            cluster.check_workers()  # a URL the broker lost: its workers send it again

    with progress:
        return wait_for(ledger, urls, timeout, every=every, on_poll=show)


def processes_needed(args: argparse.Namespace) -> int:
    """``--workers``, but no more than the URLs when only URLs are given: a cron job's
    one URL starts one worker, not one per core."""
    workers: int = args.workers
    if getattr(args, "feed", None) or getattr(args, "urls", None) or not args.url:
        return workers
    return min(workers, len(args.url))


def run_pipeline(args: argparse.Namespace, settings: Settings, console: Console | None = None,
                 outlets: Mapping[str, str] | None = None) -> int:  # fmt: skip
    """``newsq run``: enqueue, work, summarise; ``outlets`` names the summary's outlets
    by ``host:port`` (the demo's), else each is named by its articles' site."""
    started = time.monotonic()
    if settings.webhook_url:  # a refused target is one line now, not a worker's log
        from newsq.webhooks.deliver import check

        check(settings)
    with LocalCluster(settings, workers=processes_needed(args),
                      fetch_threads=getattr(args, "fetch_threads", 32),
                      layout=getattr(args, "layout", "combined"),
                      keep_state=getattr(args, "keep_state", True),
                      early=True) as cluster:  # fmt: skip
        again = cluster.resume()  # what an interrupted run on the kept state left
        # the workers, started early, have imported the pipeline meanwhile: they take
        # the broker now and start while the store opens and the input is read; with
        # nothing new to do they are stopped at once
        cluster.start_workers()
        from newsq.store.database import Store

        store = Store.from_url(settings.database_url)
        # held off through the start by the CLI (workers.cli.main); reading feeds is work
        resume_gc()
        submitted = time.monotonic()
        intake = submit(args, cluster.settings)
        resumed(intake, again)
        # reading the feeds took part of --timeout; the workers have the rest
        left = max(args.timeout - (time.monotonic() - submitted), 0.0)
        if not intake.new:
            cluster.stop_workers()
        from rich.console import Console

        console = console or Console()
        with connect_ledger(cluster.settings, "newsq run") as ledger:
            finished = wait_until_done(ledger, intake.new, cluster, left, console)
            cluster.ask_workers_to_stop()  # they shut down while the summary is read
            data = _summary(store, intake, ledger, time.monotonic() - started)
            cluster.stop_workers()
        deliver_rest(cluster.settings, store)
        from newsq.workers.report import STORY_ROWS
        from newsq.workers.stats import shared_stories

        stories = shared_stories(store, STORY_ROWS, outlets)
        store.close()
    from newsq.workers.report import print_summary

    print_summary(data, stories, console)
    if not finished:
        print(f"newsq: timed out after {args.timeout:g}s with URLs unfinished", file=sys.stderr)
        return 1
    # the contract: 0 once every URL enqueued is terminal; refused inputs were reported
    # (one line each) and counted, and are no reason to fail a cron job's whole run
    return 0


def deliver_rest(settings: Settings, store: Store) -> None:
    """The events the workers' webhook deliverer did not send before they stopped, sent
    now, for up to ``NEWSQ_WEBHOOK_DRAIN`` seconds; what is left then is one line (the
    cursor is in the store: the next run or worker sends it)."""
    from newsq.webhooks.config import WebhookConfig

    config = WebhookConfig.from_settings(settings)
    if config is None:
        return
    from newsq.webhooks.deliver import drain
    from newsq.webhooks.service import lease_client

    client = lease_client(settings)
    try:
        cursor = drain(config, store, client, config.drain)
    finally:
        client.close()
    if cursor.pending:
        why = f"last error: {cursor.last_error}" if cursor.last_error else "no answer yet"
        print(f"newsq: webhook {config.target}: {cursor.pending} events not delivered "
              f"after {config.drain:g} s ({why}); the next run sends them",
              file=sys.stderr)  # fmt: skip


def _summary(store: Store, intake: Intake, ledger: Ledger, elapsed: float) -> dict[str, Any]:
    from newsq.workers.report import summary_data

    data = summary_data(store, intake.new, ledger, elapsed, invalid=len(intake.invalid),
                        known=len(intake.known))  # fmt: skip
    if intake.invalid:  # recorded failed/invalid_url, never fetched: not in the ledger scan
        key = f"failed:{INVALID_URL}"
        data["reasons"][key] = data["reasons"].get(key, 0) + len(intake.invalid)
    return data
