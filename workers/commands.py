"""The ``newsq`` commands, one function each: ``cmd_<name>(args, settings) -> exit code``,
and :data:`COMMANDS`, the table ``newsq.workers.cli.main`` dispatches on."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from newsq import errors
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.workers.backfill_cmd import cmd_backfill
from newsq.workers.common import broker, embedded_state, need_broker, open_ledger, print_json, state
from newsq.workers.feeds_cmd import cmd_beat, cmd_feeds

if TYPE_CHECKING:  # each command imports what it runs: `newsq run` starts its workers
    from newsq.store.database import Store  # before it loads the store and Celery

# -- run / enqueue / worker ----------------------------------------------------------


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.workers.run import rejected, submit

    need_broker(settings, "enqueue")
    intake = submit(args, settings)
    print(f"enqueued {len(intake.new)}, already known {len(intake.known)}"
          + (f", invalid {len(intake.invalid)}" if intake.invalid else ""))  # fmt: skip
    return 1 if rejected(intake) else 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.feed or args.urls or args.url):
        raise ConfigError("nothing to run: give --feed URL, --urls FILE or URLs")
    from newsq.workers.run import run_pipeline

    return run_pipeline(args, settings)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.demo.run import run_demo

    return run_demo(args, settings)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.workers.early import make_tls_context, read_language_model

    read_language_model()  # beside the imports of Celery and the pipeline, below
    tls = make_tls_context()
    from newsq.workers.worker import run_worker

    tls.join()  # long done; a prefork pool forks from this process

    need_broker(settings, "worker")
    return run_worker(settings, args.queues, args.concurrency, args.pool, beat=args.beat,
                      broker_wait=args.broker_wait)  # fmt: skip


# -- single stages ---------------------------------------------------------------------


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    """The fetch stage on one URL, robots.txt asked first as in the pipeline: a URL it
    does not allow now is never requested."""
    from newsq.fetch.client import Fetcher
    from newsq.fetch.robots import ALLOWED, check_once, refusal

    fetcher = Fetcher(settings)
    try:
        robots = check_once(fetcher, settings, args.url) if settings.robots else ALLOWED
        refused = refusal(args.url, robots)
        result = refused or fetcher.fetch(args.url)
    finally:
        fetcher.close()
    shown = result.to_json()
    if refused is not None:
        shown["detail"] = robots.detail  # which robots.txt answer it was
    print_json(shown)
    return 0 if result.ok else 1


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    """One JSON line per page; a file that cannot be read, unpacked or decoded is one
    line on stderr and the others go on (exit 1 when some failed, 2 when all did)."""
    from newsq.api import extract
    from newsq.records import Article
    from newsq.urls import InvalidURL, normalize

    if args.url is not None:  # echoed as the canonical URL, and it names the site
        try:
            normalize(args.url)
        except InvalidURL as exc:
            raise ConfigError(f"--url: {exc}") from None
    failed = 0
    for path in args.files:
        try:
            raw = _read_page(path, settings.max_bytes)
        except ConfigError as exc:
            print(f"newsq: {exc}", file=sys.stderr)
            failed += 1
            continue
        result = extract(raw, args.url, settings=settings)
        if isinstance(result, Article):
            print_json({"path": path, **result.to_json()})
        elif result.reason == errors.DECODE_ERROR:  # binary junk: no page at all
            print(f"newsq: {path}: {errors.DECODE_ERROR}: {result.detail}", file=sys.stderr)
            failed += 1
        else:
            print_json({"path": path, "title": None, "author": None, "published": None,
                        "language": None, "site": None, "canonical_url": None, "text": "",
                        "paywalled": None, "reason": result.reason})  # fmt: skip
    return 0 if not failed else 2 if failed == len(args.files) else 1


def _read_page(path: str, limit: int) -> bytes:
    """The bytes of a saved page (``-``: stdin), a ``.gz`` unpacked, at most ``limit``
    of them; ConfigError saying what is wrong with the file."""
    import gzip
    import io
    import zlib

    try:
        with nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb") as file:
            raw = file.read(limit + 1)  # /dev/zero ends here too
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as unpacked:
                raw = unpacked.read(limit + 1)
        except gzip.BadGzipFile:
            raise ConfigError(f"{path}: not a gzip file") from None
        except EOFError:
            raise ConfigError(f"{path}: a truncated gzip file") from None
        except (OSError, zlib.error) as exc:
            raise ConfigError(f"{path}: a corrupt gzip file ({exc})") from None
    if len(raw) > limit:
        raise ConfigError(f"{path}: over NEWSQ_MAX_BYTES ({limit} bytes)")
    return raw


# -- reading the results ---------------------------------------------------------------


def _when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.store.database import Store
    from newsq.store.export import export_store, published_between

    store = Store.from_url(settings.database_url, create=False)  # a read makes no store
    rows = store.iter_articles(unique_only=not args.all, since=_when(args.since, "--since"),
                               until=_when(args.until, "--until"), site=args.site)  # fmt: skip
    published = (_when(args.published_since, "--published-since"),
                 _when(args.published_until, "--published-until"))  # fmt: skip
    if published != (None, None):
        rows = published_between(rows, *published)
    report = export_store(store, rows, args.format, args.out, warc=args.warc)
    if args.out or args.warc:
        print(report, file=sys.stderr)
    return 0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    """The store's events after ``--since``, one JSON line each; ``--follow`` polls for
    more until SIGINT or SIGTERM, which end it after a whole line (exit 0)."""
    import json
    import signal
    import threading

    from newsq.store.database import Store
    from newsq.store.events import follow, read

    # a follower may start before anything is stored: it makes the store and waits
    store = Store.from_url(settings.database_url, create=args.follow)
    try:
        if args.follow:
            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            # flushed once caught up: a reader sees each poll's events as they come
            stream = follow(store, args.since, every=args.interval, stop=stop,
                            caught_up=sys.stdout.flush)  # fmt: skip
        else:
            stream = read(store, args.since)
        for event in stream:
            sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    finally:
        store.close()
    return 0


def _outcome_states(args: argparse.Namespace) -> tuple[str, ...]:
    """The states ``status --failed/--skipped/--reason`` lists; () when not asked."""
    states = tuple(s for s, asked in (("failed", args.failed), ("skipped", args.skipped)) if asked)
    if not states and args.reason is None:
        return ()
    if args.url or args.dead or args.stuck:
        raise ConfigError("--failed, --skipped and --reason list URLs: give no URL, "
                          "--dead or --stuck with them")  # fmt: skip
    if args.reason is not None and args.reason not in errors.REASONS:
        raise ConfigError(f"--reason: unknown reason code {args.reason!r} "
                          f"(one of {', '.join(sorted(errors.REASONS))})")  # fmt: skip
    return states or ("failed", "skipped")


def _print_outcomes(store: Store, states: tuple[str, ...], reason: str | None) -> None:
    """One JSON object per failed or skipped URL, from the store, streamed."""
    from newsq.api import iso_time

    for row in store.iter_outcomes(states, reason=reason):
        print_json({**row, "updated_at": iso_time(row["updated_at"])})


def _reading(settings: Settings) -> Settings:
    """``settings`` for status and stats, which read the store and the ledger. With a
    broker, a SQLite store not made yet (nothing stored so far) is an empty one in
    memory: the ledger answers, no file is made. Without, a missing store is an error."""
    from newsq.store.database import missing_store

    if settings.broker_url and missing_store(settings.database_url) is not None:
        return replace(settings, database_url="sqlite://")
    return settings


@embedded_state("status", required=False)
def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.api import status
    from newsq.store.database import Store
    from newsq.urls import normalize_or_none

    outcomes = _outcome_states(args)
    settings = _reading(settings)
    store = Store.from_url(settings.database_url, create=False)  # a read makes no store
    if outcomes:
        _print_outcomes(store, outcomes, args.reason)
        return 0
    if args.url and not args.dead:
        store.close()
        out = status(args.url, settings=settings)
        if out is None:
            url = normalize_or_none(args.url) or args.url
            print_json({"url": url, "state": None, "known": False})
            return 1
        print_json(out)
        return 0
    ledger = open_ledger(settings, "status") if settings.broker_url else None
    if args.dead:
        print_json({"dead": ledger.dead() if ledger else []})
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


@embedded_state("retry")
def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.config.celery import make_app
    from newsq.feeds.send import lane_for, send_fetches
    from newsq.pipeline import requeue, requeue_stuck
    from newsq.urls import normalize_or_none

    ledger = open_ledger(settings, "retry")
    stuck = getattr(args, "stuck", None)
    if not (args.dead or stuck or args.url):
        raise ConfigError("nothing to retry: give a URL, --dead or --stuck SECONDS")
    urls: list[str] = []
    if args.dead:
        requeue(ledger, ledger.dead(), urls.append)
    elif stuck:  # taken or queued, then no progress for this long: the message was lost
        requeue_stuck(ledger, stuck, urls.append)
    else:
        requeue(ledger, [normalize_or_none(args.url) or args.url], urls.append)
    # one URL asked for is fresh; the dead list and stuck URLs are a backlog
    send_fetches(make_app(settings), urls, lane=lane_for(len(urls), bulk=bool(args.dead or stuck)))
    print(f"re-enqueued {len(urls)}")
    return 0


@embedded_state("stats")
def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from newsq.store.database import Store
    from newsq.workers.report import stats_view
    from newsq.workers.stats import StatsSource

    source = StatsSource(
        state(settings, "stats"),
        settings.key_prefix,
        Store.from_url(_reading(settings).database_url, create=False),  # makes no store
        host_rate=settings.host_rate,
        broker=broker(settings, "stats") if settings.state_url else None,
    )
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


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "demo": cmd_demo,
    "run": cmd_run,
    "enqueue": cmd_enqueue,
    "worker": cmd_worker,
    "fetch": cmd_fetch,
    "extract": cmd_extract,
    "export": cmd_export,
    "events": cmd_events,
    "status": cmd_status,
    "retry": cmd_retry,
    "stats": cmd_stats,
    "feeds": cmd_feeds,
    "beat": cmd_beat,
    "backfill": cmd_backfill,
}
