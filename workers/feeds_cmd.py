"""``newsq feeds add|list|remove`` and ``newsq beat``: feeds that poll themselves.

The feeds live in the store (``NEWSQ_DATABASE_URL``); registering one needs no broker.
They are polled by the ``newsq.poll_feeds`` tick that Celery beat sends: run one beat,
either inside a worker (``newsq worker --beat``) or on its own (``newsq beat``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsq.config.settings import Settings
from newsq.errors import ConfigError

if TYPE_CHECKING:  # the commands import them: the parser (``--help``) needs none
    from newsq.store.database import Store


def _duration(value: str) -> float:
    from newsq.feeds.poll import parse_duration

    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(sub: Any) -> None:
    """Add ``feeds`` (with add/list/remove) and ``beat`` to the CLI's subparsers."""
    feeds = sub.add_parser("feeds", help="feeds and sitemaps that poll themselves")
    actions = feeds.add_subparsers(dest="feeds_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register an RSS/Atom feed or a sitemap, due now; "
                             "again: change its intervals, keeping its history")  # fmt: skip
    add.add_argument("url", nargs="?", help="the feed's or sitemap's URL")
    add.add_argument("--file", metavar="FILE",
                     help="register the feeds of FILE, one URL a line (`#` comments; `-` is "
                          "stdin) in one go, each first due at a random time within its "
                          "interval; a bad line is an error and the others are added")  # fmt: skip
    add.add_argument("--every", type=_duration, default=None, metavar="DURATION",
                     help="polling interval from now, e.g. 30s, 10m, 2h, 1d (default "
                          "NEWSQ_FEED_EVERY; for a feed already there, its own)")  # fmt: skip
    add.add_argument("--min", dest="min_every", type=_duration, metavar="DURATION",
                     help="shortest interval the poller may adapt to")  # fmt: skip
    add.add_argument("--max", dest="max_every", type=_duration, metavar="DURATION",
                     help="longest interval the poller may adapt to")  # fmt: skip
    add.add_argument("--kind", choices=("feed", "sitemap"), default=None,
                     help="default: guessed from the URL, corrected by the first poll")  # fmt: skip
    listing = actions.add_parser("list", help="the registered feeds, soonest due first")
    listing.add_argument("--json", action="store_true", help="one JSON object per feed")
    remove = actions.add_parser("remove", help="stop polling a feed")
    remove.add_argument("url", help="the feed's URL, as added")
    sub.add_parser("beat", help="the Celery beat that ticks feed polling (one per cluster)")


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    from newsq.feeds.poll import due_in

    out = {k: _utc(v).isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
    return {**out, "due_in_s": round(due_in(row), 1)}


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # SQLite keeps UTC, naive


def cmd_feeds(args: argparse.Namespace, settings: Settings) -> int:
    from newsq.feeds.discover import is_home_page
    from newsq.feeds.poll import add_feed, format_duration, remove_feed
    from newsq.store.database import Store
    from newsq.urls import normalize_or_none
    from newsq.workers.common import print_json

    if args.feeds_command == "add" and bool(args.url) == bool(args.file):
        raise ConfigError("feeds add: give a feed URL or --file FILE, one of the two")
    lines = _read_lines(args.file) if args.feeds_command == "add" and args.file else None
    # only registering makes a store; listing or removing needs one there
    store = Store.from_url(settings.database_url, create=args.feeds_command == "add")
    try:
        if lines is not None:
            return _add_many(store, lines, args, settings)
        if args.feeds_command == "add" and args.kind is None and is_home_page(args.url):
            return _add_site(store, args, settings)
        if args.feeds_command == "add":
            known = store.get_feed(normalize_or_none(args.url) or args.url) is not None
            row = add_feed(store, args.url, settings, every=args.every, min_every=args.min_every,
                           max_every=args.max_every, kind=args.kind)  # fmt: skip
            low, high = format_duration(row["min_every_s"]), format_duration(row["max_every_s"])
            every = format_duration(row["every_s"])
            verb = "updated" if known else "added"
            print(f"{verb} {row['url']} ({row['kind']}), every {every} [{low}..{high}]")
            return 0
        if args.feeds_command == "remove":
            if not remove_feed(store, args.url):
                print(f"newsq: no such feed: {args.url}", file=sys.stderr)
                return 1
            print(f"removed {args.url}")
            return 0
        rows = store.list_feeds()
        if args.json:
            for row in rows:
                print_json(_row_json(row))
            return 0
        _print_table(rows)
        return 0
    finally:
        store.close()


def _add_site(store: Store, args: argparse.Namespace, settings: Settings) -> int:
    """``feeds add`` of a site's home page: register the sitemaps its robots.txt names
    and the feeds the page links; exit 1 when it offers none."""
    from newsq.feeds.discover import discover
    from newsq.feeds.poll import add_feed, format_duration
    from newsq.fetch.client import Fetcher

    with Fetcher(settings) as fetcher:
        found = discover(fetcher, args.url, settings.host_rate)
    for url, kind in found.feeds:
        row = add_feed(store, url, settings, every=args.every, min_every=args.min_every,
                       max_every=args.max_every, kind=kind)  # fmt: skip
        print(f"added {row['url']} ({row['kind']}), every {format_duration(row['every_s'])}")
    if found.feeds:
        return 0
    why = "; ".join(found.problems) or "robots.txt names no sitemap, the page links no feed"
    print(f"newsq: {args.url}: no feed or sitemap found ({why})", file=sys.stderr)
    return 1


def _read_lines(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read feed file {path}: {exc}") from None
    return text.splitlines()


def _add_many(store: Store, lines: list[str], args: argparse.Namespace,
              settings: Settings) -> int:  # fmt: skip
    """``feeds add --file``: one line per bad input line on stderr, one summary line."""
    from newsq.feeds.poll import add_feeds, format_duration

    done = add_feeds(store, lines, settings, every=args.every, min_every=args.min_every,
                     max_every=args.max_every, kind=args.kind)  # fmt: skip
    for number, error in done.errors:
        print(f"newsq: {args.file}:{number}: {error}", file=sys.stderr)
    spread = f"; first polls within {format_duration(done.spread_s)}" if done.spread_s else ""
    bad = f", {len(done.errors)} lines refused" if done.errors else ""
    print(f"added {done.added}, updated {done.updated} feeds{bad}{spread}")
    return 1 if done.errors else 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    from newsq.feeds.poll import due_in, format_duration

    if not rows:
        print("no feeds; add one with: newsq feeds add URL --every 10m")
        return
    header = ("every", "due in", "status", "new", "polls", "kind", "url")
    lines = [header]
    for row in rows:
        due = due_in(row)
        lines.append((
            format_duration(row["every_s"]),
            "now" if due <= 0 else format_duration(due),
            str(row["last_status"] or "-"),
            str(row["last_new"]),
            str(row["polls"]),
            row["kind"],
            row["url"],
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1])


def cmd_beat(args: argparse.Namespace, settings: Settings) -> int:
    """Run Celery beat alone: it sends ``newsq.poll_feeds`` every ``NEWSQ_FEED_TICK``."""
    from newsq.workers.common import need_broker
    from newsq.workers.logs import setup_logging

    need_broker(settings, "beat")
    setup_logging(settings.log_level, settings.log_format)
    from newsq.config.celery import app

    app.start(["beat", "--loglevel", settings.log_level])
    return 0
