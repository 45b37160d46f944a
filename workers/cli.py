"""The ``newsq`` command line (the README's "Commands" section has every command).

Every expected failure (bad argument, unreachable broker or database, unreadable
file) ends with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from newsq.config.settings import Settings
from newsq.errors import NewsqError
from newsq.workers.common import leave_out_httpx_cli
from newsq.workers.early import pause_gc, resume_gc

EXIT_ERROR = 2


def _whole(value: str, least: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least {least}")
    return number


def _positive(value: str) -> int:
    return _whole(value, 1)


def _event_id(value: str) -> int:
    return _whole(value, 0)


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be more than 0")
    return number


def _inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--feed",
        action="append",
        default=[],
        metavar="URL",
        help="an RSS/Atom feed or sitemap whose items to enqueue (repeatable)",
    )
    parser.add_argument(
        "--urls",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of URLs, one per line ('-' reads stdin)",
    )
    parser.add_argument("url", nargs="*", help="article URLs")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version="newsq 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the whole pipeline on a bundled sample site")
    demo.add_argument("--workers", type=_positive, default=2,
                      help="local worker processes (default 2)")  # fmt: skip
    demo.add_argument("--timeout", type=_seconds, default=300, metavar="SECONDS",
                      help="give up after this many seconds (default 300; exit 1)")  # fmt: skip

    run = sub.add_parser("run", help="enqueue, run local workers until done, summarise")
    _inputs(run)
    run.add_argument("--workers", type=_positive, default=os.cpu_count() or 2,
                     help="local worker processes (default: one per core)")  # fmt: skip
    run.add_argument("--timeout", type=_seconds, default=3600,
                     help="give up waiting after this many seconds (exit 1)")  # fmt: skip
    run.add_argument(
        "--fetch-threads",
        type=_positive,
        default=32,
        help="threads per local worker (only as many run as keep it busy)",
    )
    run.add_argument("--layout", choices=("combined", "prefork", "split"), default="combined",
                     help="combined: N threaded workers that fetch and process; prefork: "
                     "one worker, N children that fetch and process; split: a fetch worker "
                     "and a prefork process worker")  # fmt: skip

    enqueue = sub.add_parser("enqueue", help="enqueue only (needs NEWSQ_BROKER_URL)")
    _inputs(enqueue)

    worker = sub.add_parser("worker", help="a Celery worker for the given queues")
    worker.add_argument("--queues", default="fetch,process",
                        help="queues to consume, comma-separated (default both)")  # fmt: skip
    worker.add_argument("--concurrency", type=_positive, default=None,
                        help="pool size (default: cores for prefork, 32 threads)")  # fmt: skip
    worker.add_argument("--pool", choices=("prefork", "threads", "solo"), default=None,
                        help="default: threads for fetch alone, else prefork")  # fmt: skip
    worker.add_argument("--beat", action="store_true",
                        help="also run Celery beat here (feed polls; one per cluster)")  # fmt: skip
    worker.add_argument("--broker-wait", type=_seconds, metavar="SECONDS",
                        help="give up (exit 2) when the broker is not reachable within this "
                        "many seconds of start (default: wait for ever)")  # fmt: skip

    fetch = sub.add_parser("fetch", help="fetch one URL; print the result as JSON")
    fetch.add_argument("url", help="the URL to fetch")

    extract = sub.add_parser("extract", help="clean saved pages offline; JSON lines")
    extract.add_argument("files", nargs="+", metavar="FILE", help="HTML files ('-' for stdin)")
    extract.add_argument("--url", help="the page's address, for relative links and site")

    export = sub.add_parser("export", help="write stored articles (JSON Lines by default)")
    export.add_argument("--out", metavar="FILE", help="output file (default stdout)")
    export.add_argument("--all", action="store_true", help="include duplicate copies")
    export.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl",
                        help="default jsonl; parquet needs the `parquet` extra")  # fmt: skip
    export.add_argument("--since", metavar="ISO",
                        help="fetched (not published) at or after this ISO 8601 time")  # fmt: skip
    export.add_argument("--until", metavar="ISO", help="fetched before this time")
    export.add_argument("--published-since", metavar="ISO",
                        help="published at or after this time; a plain date is 00:00 UTC, "
                             "an article without a date is left out")  # fmt: skip
    export.add_argument("--published-until", metavar="ISO", help="published before this time")
    export.add_argument("--site", help="only this site")
    export.add_argument("--warc", metavar="FILE",
                        help="also write kept raw pages (NEWSQ_KEEP_RAW=1) as WARC")  # fmt: skip

    events = sub.add_parser("events", help="stored articles and new copies as events, JSON Lines")
    events.add_argument("--since", type=_event_id, default=0, metavar="ID",
                        help="only the events after this event id (default: all)")  # fmt: skip
    events.add_argument("--follow", action="store_true",
                        help="then wait for new events until interrupted (exit 0)")  # fmt: skip
    events.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS",
                        help="seconds between polls with --follow (default 1)")  # fmt: skip

    status = sub.add_parser("status", help="URL counts by state, or one URL's state")
    status.add_argument("url", nargs="?", help="one URL: its state, reason and story")
    status.add_argument("--dead", action="store_true", help="list URLs given up as poison")
    status.add_argument("--stuck", type=_seconds, metavar="SECONDS",
                        help="list URLs in a non-terminal state for longer than this")  # fmt: skip
    status.add_argument("--failed", action="store_true",
                        help="list failed URLs from the store, JSON Lines")  # fmt: skip
    status.add_argument("--skipped", action="store_true",
                        help="list skipped URLs the same way (with --failed: both)")  # fmt: skip
    status.add_argument("--reason", metavar="CODE",
                        help="only URLs with this reason (alone: failed and skipped)")  # fmt: skip

    retry = sub.add_parser("retry", help="re-enqueue a failed URL, or every dead one")
    retry.add_argument("url", nargs="?", help="a failed URL to enqueue again")
    retry.add_argument("--dead", action="store_true", help="every URL given up as poison")
    retry.add_argument("--stuck", type=_seconds, metavar="SECONDS",
                       help="every URL in a non-terminal state for longer than this")  # fmt: skip

    stats = sub.add_parser("stats", help="queues, states, dedup ratio, failures")
    stats.add_argument("--once", action="store_true", help="print one table and exit")
    stats.add_argument("--interval", type=_seconds, default=2.0, metavar="SECONDS",
                       help="seconds between refreshes of the live view (default 2)")  # fmt: skip

    from newsq.workers.backfill_cmd import add_parser as add_backfill_parser
    from newsq.workers.feeds_cmd import add_parsers as add_feeds_parsers

    add_backfill_parser(sub, _positive, _seconds)
    add_feeds_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command's handler (``commands.COMMANDS``): the exit code."""
    args = _parse(build_parser(), argv)
    leave_out_httpx_cli()
    paused = args.command in PAUSED_GC
    if paused:
        pause_gc()
    try:
        settings = Settings.from_env()
        from newsq.workers.logs import setup_logging

        if args.command != "worker":
            setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level,
                          settings.log_format)  # fmt: skip
        from newsq.workers.commands import COMMANDS

        code = COMMANDS[args.command](args, settings)
        if argv is None and args.command in QUICK_EXIT:
            _exit_now(code)
        return code
    except NewsqError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except BrokenPipeError:
        return 0
    except Exception as exc:
        message = _library_failure(exc)
        if message is None:
            raise
        return _fail(message)
    finally:
        resume_gc()


QUICK_EXIT = frozenset({"run", "demo"})
"""Commands whose process ends without the interpreter's teardown, which frees every
object of Celery, SQLAlchemy and the pipeline one by one: a share of a cron job's
one-URL run (``bench/README.md``). They have closed their stores and servers by then."""

PAUSED_GC = QUICK_EXIT | {"worker", "enqueue"}
"""Commands that start with garbage collection off (``workers.early.pause_gc``); it is
back on when they return."""


def _exit_now(code: int) -> None:
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _library_failure(exc: Exception) -> str | None:
    """The one line for a Redis or database error, None for anything else. Looked up
    in ``sys.modules``: a command that never imported redis or SQLAlchemy cannot have
    raised their errors, and ``--help`` or ``--version`` does not load them."""
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(exc, redis.ConnectionError):
        return f"cannot reach Redis: {exc}"
    if redis is not None and isinstance(exc, redis.RedisError):
        return f"Redis error: {exc}"
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
        return f"database error: {' '.join(str(exc).splitlines()[0].split())}"
    return None


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an unknown flag is reported by the subcommand that
    was given it, with that subcommand's usage (argparse reports it at the top)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand's parser that ``args`` went through (``feeds add``, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return _chosen(action.choices[name], args)
    return parser


def _fail(message: str) -> int:
    print(f"newsq: {message}", file=sys.stderr)
    return EXIT_ERROR
