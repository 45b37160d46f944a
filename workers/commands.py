"""The ``newsq`` commands, one function each: ``cmd_<name>(args, settings) -> exit code``."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import redis
from rich.console import Console

from config.settings import Settings
from newsq.errors import ConfigError
from newsq.ledger import Ledger
from newsq.records import QUEUED, TERMINAL
from newsq.store import Store
from workers.cli import need_broker, print_json
from workers.embedded import LocalCluster
from workers.feeds_cmd import cmd_beat, cmd_feeds  # noqa: F401  (dispatched by name)
from workers.intake import Intake, enqueue, gather

# -- run / enqueue / worker ----------------------------------------------------------


def _submit(settings: Settings, args: argparse.Namespace, store: Store) -> tuple[Intake, Ledger]:
    from config.celery import make_app
    from newsq.fetch import Fetcher

    client = redis.Redis.from_url(settings.broker_url or "")
    client.ping()
    ledger = Ledger(client, settings.key_prefix)
    fetcher = Fetcher(settings)
    try:
        raw, problems = gather(fetcher, args.feed, args.urls, args.url)
    finally:
        fetcher.close()
    app = make_app(settings)
    with app.producer_or_acquire() as producer:

        def send(url: str) -> None:
            app.send_task("newsq.fetch", args=(url,), queue="fetch", producer=producer)

        intake = enqueue(ledger, store, raw, send=send)
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


def wait_until_done(ledger: Ledger, urls: list[str], cluster: LocalCluster, timeout: float,
                    console: Console) -> bool:  # fmt: skip
    """Poll the ledger until every URL is terminal; True when all are."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    deadline = time.monotonic() + timeout
    total = len(urls)
    live = console.is_terminal
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                        disable=not live)  # fmt: skip
    pending = list(urls)
    last_line = 0.0
    with progress:
        task = progress.add_task("processing", total=total)
        while pending:
            states = ledger.states(pending)
            pending = [u for u, s in zip(pending, states, strict=True) if s not in TERMINAL]
            done = total - len(pending)
            progress.update(task, completed=done)
            if not live and time.monotonic() - last_line > 5:
                print(f"newsq: {done}/{total} URLs done", file=sys.stderr)
                last_line = time.monotonic()
            if not pending:
                break
            if time.monotonic() > deadline:
                return False
            cluster.check_workers()
            time.sleep(0.2)
    return True


def run_pipeline(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from workers.report import print_summary, summary_data

    store = Store.from_url(settings.database_url)
    started = time.monotonic()
    with LocalCluster(settings, workers=args.workers,
                      fetch_threads=getattr(args, "fetch_threads", 16),
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
    from workers.demo import run_demo

    return run_demo(args, settings)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import run_worker

    need_broker(settings, "worker")
    return run_worker(settings, args.queues, args.concurrency, args.pool, beat=args.beat)


# -- single stages ---------------------------------------------------------------------


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.fetch import Fetcher

    fetcher = Fetcher(settings)
    try:
        result = fetcher.fetch(args.url)
    finally:
        fetcher.close()
    print_json(result.to_json())
    return 0


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.clean import extract
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
    from workers.export import export_store

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
        for source in (record or {}, live or {}):
            out.update({k: v for k, v in source.items() if v not in (None, "")})
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
    from config.celery import make_app
    from newsq.urls import normalize_or_none

    need_broker(settings, "retry")
    ledger = _ledger(settings)
    assert ledger is not None
    stuck = getattr(args, "stuck", None)
    if args.dead:
        urls = ledger.dead()
    elif stuck:  # taken or queued, then no progress for this long: the message was lost
        urls = [url for url, _, _ in ledger.stuck(stuck, limit=1_000_000)]
    elif args.url:
        urls = [normalize_or_none(args.url) or args.url]
    else:
        raise ConfigError("nothing to retry: give a URL, --dead or --stuck SECONDS")
    app = make_app(settings)
    for url in urls:
        ledger.move(url, QUEUED, force=True, reason=None, attempts=0)
        ledger.remove_dead(url)
        app.send_task("newsq.fetch", args=(url,), queue="fetch")
    print(f"re-enqueued {len(urls)}")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from workers.report import stats_view
    from workers.stats import StatsSource

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
