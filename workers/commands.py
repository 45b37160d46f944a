"""The ``newsq`` commands, one function each: ``cmd_<name>(args, settings) -> exit code``."""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.feeds.intake import Intake, batches, enqueue, gather
from newsq.ledger import Ledger
from newsq.records import TERMINAL
from newsq.store.database import Store
from newsq.workers.cli import need_broker, print_json
from newsq.workers.embedded import LocalCluster
from newsq.workers.feeds_cmd import cmd_beat, cmd_feeds  # noqa: F401  (dispatched by name)

# -- run / enqueue / worker ----------------------------------------------------------


def _submit(settings: Settings, args: argparse.Namespace, store: Store) -> tuple[Intake, Ledger]:
    from newsq.config.celery import make_app
    from newsq.fetch.client import Fetcher

    client = redis.Redis.from_url(settings.broker_url or "")
    client.ping()
    ledger = Ledger(client, settings.key_prefix)
    fetcher = Fetcher(settings)
    try:
        raw, problems = gather(fetcher, args.feed, args.urls, args.url)
    finally:
        fetcher.close()
    app = make_app(settings)
    new: list[str] = []
    intake = enqueue(ledger, store, raw, send=new.append)
    with app.producer_or_acquire() as producer:
        for batch in batches(new, settings.fetch_batch):
            if len(batch) == 1:
                app.send_task("newsq.fetch", args=(batch[0],), queue="fetch", producer=producer)
            else:
                app.send_task("newsq.fetch_many", args=(batch,), queue="fetch", producer=producer)
    intake.feed_errors = problems
    for feed, error in problems:
        print(f"newsq: feed {feed}: {error}", file=sys.stderr)
    return intake, ledger


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    need_broker(settings, "enqueue")
    store = Store.from_url(settings.database_url)
    intake, _ = _submit(settings, args, store)
    print(f"enqueued {len(intake.new)}, already known {len(intake.known)}"
          + (f", invalid {len(intake.invalid)}" if intake.invalid else ""))  # fmt: skip
    return 0


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
        intake, ledger = _submit(cluster.settings, args, store)
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


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.feed or args.urls or args.url):
        raise ConfigError("nothing to run: give --feed URL, --urls FILE or URLs")
    return run_pipeline(args, settings, Console())


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.demo.run import run_demo

    return run_demo(args, settings)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.workers.worker import run_worker

    need_broker(settings, "worker")
    return run_worker(settings, args.queues, args.concurrency, args.pool, beat=args.beat)


# -- single stages ---------------------------------------------------------------------


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.fetch.client import Fetcher

    fetcher = Fetcher(settings)
    try:
        result = fetcher.fetch(args.url)
    finally:
        fetcher.close()
    print_json(result.to_json())
    return 0


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.clean.extract import extract
    from newsq.records import Article

    status = 0
    for path in args.files:
        try:
            raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            print(f"newsq: cannot read {path}: {exc.strerror}", file=sys.stderr)
            status = 2
            continue
        if path.endswith(".gz"):
            import gzip

            raw = gzip.decompress(raw)
        html = raw.decode("utf-8", errors="replace")
        result = extract(html, args.url)
        if isinstance(result, Article):
            print_json({"path": path, **result.to_json()})
        else:
            print_json({"path": path, "title": None, "author": None, "published": None,
                        "language": None, "site": None, "canonical_url": None, "text": "",
                        "reason": result.reason})  # fmt: skip
    return status


# -- reading the results ---------------------------------------------------------------


def _when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.store.export import export_store

    store = Store.from_url(settings.database_url)
    rows = store.iter_articles(unique_only=not args.all, since=_when(args.since, "--since"),
                               until=_when(args.until, "--until"), site=args.site)  # fmt: skip
    report = export_store(store, rows, args.format, args.out, warc=args.warc)
    if args.out or args.warc:
        print(report, file=sys.stderr)
    return 0


def _ledger(settings: Settings) -> Ledger | None:
    if not settings.broker_url:
        return None
    client = redis.Redis.from_url(settings.broker_url)
    client.ping()
    return Ledger(client, settings.key_prefix)


_INT_FIELDS = ("attempts", "deliveries")
_FLOAT_FIELDS = ("similarity", "t_enq", "t_start", "t_upd", "t_done")


def _typed(fields: dict[str, Any]) -> dict[str, Any]:
    """The ledger's string fields as the numbers they are."""
    out = dict(fields)
    for names, kind in ((_INT_FIELDS, int), (_FLOAT_FIELDS, float)):
        for name in names:
            if isinstance(out.get(name), str) and out[name]:
                with suppress(ValueError):
                    out[name] = kind(out[name])
    return out


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.urls import normalize_or_none

    store = Store.from_url(settings.database_url)
    ledger = _ledger(settings)
    if args.dead:
        print_json({"dead": ledger.dead() if ledger else []})
        return 0
    if args.url:
        url = normalize_or_none(args.url) or args.url
        live = ledger.get(url) if ledger else None
        record = store.url_record(url)
        if live is None and record is None:
            print_json({"url": url, "state": None, "known": False})
            return 1
        out = {"url": url, "state": None, "reason": None, "story_id": None,
               "duplicate_of": None, "similarity": None}  # fmt: skip
        # a URL sent again (retry) is live in the ledger; its stored outcome is stale
        fresh = live is not None and live.get("state") not in TERMINAL
        for source in (live or {},) if fresh else (record or {}, live or {}):
            out.update({k: v for k, v in _typed(source).items() if v not in (None, "")})
        print_json(out)
        return 0
    counts = ledger.counts() if ledger else {}
    stored = store.state_counts()
    out = {"states": counts or stored, "store": stored}
    if args.stuck and ledger:
        out["stuck"] = [
            {"url": u, "state": s, "age_s": round(a, 1)} for u, s, a in ledger.stuck(args.stuck)
        ]
    print_json(out)
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.config.celery import make_app
    from newsq.pipeline import requeue, requeue_stuck
    from newsq.urls import normalize_or_none

    need_broker(settings, "retry")
    ledger = _ledger(settings)
    assert ledger is not None
    stuck = getattr(args, "stuck", None)
    if not (args.dead or stuck or args.url):
        raise ConfigError("nothing to retry: give a URL, --dead or --stuck SECONDS")
    app = make_app(settings)
    with app.producer_or_acquire() as producer:

        def send(url: str) -> None:
            app.send_task("newsq.fetch", args=(url,), queue="fetch", producer=producer)

        if args.dead:
            urls = requeue(ledger, ledger.dead(), send)
        elif stuck:  # taken or queued, then no progress for this long: the message was lost
            urls = requeue_stuck(ledger, stuck, send)
        else:
            urls = requeue(ledger, [normalize_or_none(args.url) or args.url], send)
    print(f"re-enqueued {len(urls)}")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.workers.report import stats_view
    from newsq.workers.stats import StatsSource

    need_broker(settings, "stats")
    client = redis.Redis.from_url(settings.broker_url or "")
    client.ping()
    source = StatsSource(client, settings.key_prefix, Store.from_url(settings.database_url))
    console = Console()
    if args.once or not console.is_terminal:
        console.print(stats_view(source.snapshot()))
        return 0
    from rich.live import Live

    with Live(stats_view(source.snapshot()), console=console, screen=False,
              refresh_per_second=4) as live:  # fmt: skip
        while True:
            time.sleep(args.interval)
            live.update(stats_view(source.snapshot()))
