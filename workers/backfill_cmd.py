"""``newsq backfill FILE_OR_URL...``: WARC files through the pipeline, split into spans.

Embedded by default, as ``newsq run`` is (local workers on the Redis kept beside the
store, so a file given again runs only what is left of it, and its URLs meet the same
dedup index); with ``NEWSQ_BROKER_URL`` the spans go to the running workers
(``--no-wait``: at once, without waiting for them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsq.config.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from newsq.backfill.progress import Progress, Span
    from newsq.workers.embedded import LocalCluster

MIN_SPAN = 1 << 20
"""Bytes: no span is smaller (a task's overhead is a few milliseconds)."""
MAX_SPAN = 32 << 20
"""Bytes: no span is larger, so a worker that dies loses little work in progress."""
SPANS_PER_WORKER = 8


def add_parser(sub: Any, positive: Callable[[str], int], seconds: Callable[[str], float]) -> None:
    """Add ``backfill`` to the CLI's subparsers."""
    parser = sub.add_parser("backfill", help="read WARC files (paths or URLs) into the pipeline")
    parser.add_argument("sources", nargs="+", metavar="FILE_OR_URL",
                        help="WARC files, gzipped per record or not; http(s) URLs are read "
                             "in byte ranges")  # fmt: skip
    parser.add_argument("--workers", type=positive, default=os.cpu_count() or 2,
                        help="local worker processes (default: one per core)")  # fmt: skip
    parser.add_argument("--timeout", type=seconds, default=86400,
                        help="give up waiting after this many seconds (exit 1)")  # fmt: skip
    parser.add_argument("--no-wait", action="store_true",
                        help="with NEWSQ_BROKER_URL: send the spans and exit")  # fmt: skip


@dataclass(frozen=True)
class Source:
    name: str
    size: int
    gzipped: bool


def _describe(sources: list[str], settings: Settings) -> list[Source]:
    from newsq.backfill.source import describe, is_url
    from newsq.backfill.warc import is_gzip

    fetcher = None
    if any(is_url(s) for s in sources):
        from newsq.fetch.client import Fetcher

        fetcher = Fetcher(settings)
    try:
        found = []
        for name in sources:
            name = name if is_url(name) else os.path.abspath(name)  # workers elsewhere
            size, head = describe(name, fetcher)
            found.append(Source(name, size, is_gzip(head)))
        return found
    finally:
        if fetcher is not None:
            fetcher.close()


def _plan(progress: Progress, sources: list[Source], pieces: int) -> tuple[list[str], list[Span]]:
    """Each source's job, and the spans of them not done yet."""
    from newsq.backfill.progress import job_id, split

    jobs, todo = [], []
    for src in sources:
        job = job_id(src.name, src.size)
        wanted = max(pieces, -(-src.size // MAX_SPAN))
        spans = split(job, src.name, src.size, src.gzipped, wanted, MIN_SPAN)
        jobs.append(job)
        todo += progress.plan(spans, src.size)
    return jobs, todo


def _send(settings: Settings, spans: list[Span]) -> None:
    from newsq.config.celery import BACKFILL_TASK, BULK, PROCESS_QUEUE, make_app

    app = make_app(settings)
    try:
        with app.producer_or_acquire() as producer:
            for span in spans:  # behind live items: the bulk lane
                app.send_task(BACKFILL_TASK, args=(span.to_json(),), queue=PROCESS_QUEUE,
                              producer=producer, priority=BULK)  # fmt: skip
    finally:
        app.close()


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.errors import ConfigError

    if args.no_wait and not settings.broker_url:
        raise ConfigError("--no-wait needs NEWSQ_BROKER_URL (running workers to hand to)")
    sources = _describe(args.sources, settings)
    started = time.monotonic()
    if settings.broker_url:
        return _backfill(args, settings, sources, None, started)
    from newsq.workers.embedded import LocalCluster

    # one span at a time per process, two threads so reading overlaps cleaning: more
    # would reserve spans that the other processes could be working on
    with LocalCluster(settings, workers=args.workers, fetch_threads=2, keep_state=True,
                      early=True) as cluster:  # fmt: skip
        cluster.resume()  # what an interrupted `newsq run` on the kept state left
        cluster.start_workers()
        code = _backfill(args, cluster.settings, sources, cluster, started)
        cluster.stop_workers()
    return code


def _backfill(args: argparse.Namespace, settings: Settings, sources: list[Source],
              cluster: LocalCluster | None, started: float) -> int:  # fmt: skip
    from rich.console import Console

    from newsq.api import connect_ledger, wait_for
    from newsq.backfill.progress import Progress

    with connect_ledger(settings, "newsq backfill") as ledger:
        progress = Progress(ledger.redis, settings.key_prefix)
        jobs, todo = _plan(progress, sources, args.workers * SPANS_PER_WORKER)
        _send(settings, todo)
        if args.no_wait:
            print(f"sent {len(todo)} spans of {len(sources)} files "
                  f"(jobs {', '.join(jobs)})")  # fmt: skip
            return 0
        console = Console(stderr=True)
        finished = wait_for_spans(progress, jobs, cluster, args.timeout, console)
        if finished:  # the pages the process step put off, processed since or now
            held = progress.held(jobs)
            left = max(args.timeout - (time.monotonic() - started), 0.0)
            check = (lambda *_: cluster.check_workers()) if cluster is not None else None
            finished = wait_for(ledger, held, left, on_poll=check)
        totals = progress.settled(jobs, ledger)
        problems = progress.errors(jobs)
    print_summary(totals, time.monotonic() - started, len(sources))
    for problem in problems:
        print(f"newsq: {problem}", file=sys.stderr)
    if not finished:
        print(f"newsq: timed out after {args.timeout:g}s with spans unfinished", file=sys.stderr)
        return 1
    return 1 if problems else 0


def wait_for_spans(progress: Progress, jobs: list[str], cluster: LocalCluster | None,
                   timeout: float, console: Console, every: float = 0.5) -> bool:  # fmt: skip
    """Wait until every span of ``jobs`` is done, showing records read, stored,
    duplicates, skipped by reason, the rate and the time left: a progress bar on a
    terminal, else a line on stderr every 5 s. True when all are."""
    from rich.progress import BarColumn, DownloadColumn, TextColumn
    from rich.progress import Progress as Bar

    from newsq.workers.run import _Rate

    live = console.is_terminal
    bar = Bar("backfill", BarColumn(), DownloadColumn(), TextColumn("{task.fields[line]}"),
              console=console, disable=not live)  # fmt: skip
    deadline = time.monotonic() + timeout
    rate, size_rate = _Rate(), _Rate()
    last_line = 0.0
    with bar:
        task = bar.add_task("backfill", total=None, line="")
        while True:
            totals = progress.totals(jobs)
            records, done_bytes = totals.get("records", 0), totals.get("bytes_done", 0)
            rate.add(records)
            size_rate.add(done_bytes)
            line = (f"{progress_line(totals)}, {rate.per_second:.0f} records/s, "
                    f"ETA {size_rate.eta(totals.get('bytes', 0) - done_bytes)}")  # fmt: skip
            bar.update(task, total=totals.get("bytes", 0), completed=done_bytes, line=line)
            if totals.get("ranges_done", 0) >= totals.get("ranges", 0):
                return True
            if not live and time.monotonic() - last_line > 5:
                print(f"newsq: {line}", file=sys.stderr)
                last_line = time.monotonic()
            if time.monotonic() > deadline:
                return False
            if cluster is not None:
                cluster.check_workers()
            time.sleep(every)


def _by_reason(totals: dict[str, int], state: str) -> dict[str, int]:
    return {k.split(":", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith(f"{state}:")}


def progress_line(totals: dict[str, int]) -> str:
    skipped = _by_reason(totals, "skipped")
    reasons = ", ".join(f"{k} {v}" for k, v in skipped.items())
    return (f"{totals.get('records', 0)} records read, {totals.get('stored', 0)} stored, "
            f"{totals.get('duplicate', 0)} duplicates, {sum(skipped.values())} skipped"
            + (f" ({reasons})" if reasons else ""))  # fmt: skip


def print_summary(totals: dict[str, int], elapsed: float, files: int) -> None:
    """The outcome of every record of the files, one line per kind, on stdout."""
    records = totals.get("records", 0)
    print(f"backfill: {files} files, {records} records in {elapsed:.1f} s "
          f"({records / elapsed if elapsed > 0 else 0:.0f} records/s)")  # fmt: skip
    for state in ("stored", "duplicate", "known"):
        print(f"  {state:<10} {totals.get(state, 0):>8}")
    for state in ("skipped", "failed"):
        reasons = _by_reason(totals, state)
        detail = ", ".join(f"{k} {v}" for k, v in reasons.items())
        print(f"  {state:<10} {sum(reasons.values()):>8}" + (f"  ({detail})" if detail else ""))
    captures = sum(v for k, v in totals.items() if k.split(":")[0] in
                   ("stored", "duplicate", "known", "skipped", "failed"))  # fmt: skip
    print(f"  {'other':<10} {records - captures:>8}  (warcinfo, request, metadata records)")
