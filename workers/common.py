"""What the command modules share: the broker they need (or the embedded state's), and
JSON on stdout.

It imports none of them: ``cli`` imports ``commands``, which imports ``feeds_cmd``, and
every one of them imports this module, never one another backwards.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from newsq.config.settings import Settings
from newsq.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a command loads only what it runs
    import redis

    from newsq.ledger import Ledger


def leave_out_httpx_cli() -> None:
    """``import httpx`` also imports its command line (``httpx._main``: rich's console,
    click, pygments), about 50 ms of CPU a process that no newsq process runs; marked
    absent, httpx puts a stub in its place (its own ``except ImportError``)."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def need_broker(settings: Settings, command: str) -> str:
    """The broker URL ``newsq COMMAND`` needs; ConfigError when none is set."""
    if not settings.broker_url:
        raise ConfigError(f"'newsq {command}' needs NEWSQ_BROKER_URL (a redis:// URL)")
    return settings.broker_url


def broker(settings: Settings, command: str) -> redis.Redis:
    """A connection to the broker's Redis ``newsq COMMAND`` reads Celery's keys on,
    checked with a ping."""
    from newsq.connections import broker_redis

    need_broker(settings, command)
    client = broker_redis(settings)
    client.ping()
    return client


def state(settings: Settings, command: str) -> redis.Redis:
    """A connection to the shared state's Redis ``newsq COMMAND`` needs (``NEWSQ_STATE_URL``,
    by default the broker's), checked with a ping."""
    from newsq.connections import state_redis

    need_broker(settings, command)
    client = state_redis(settings)
    client.ping()
    return client


def open_ledger(settings: Settings, command: str) -> Ledger:
    """The URL ledger on the shared state ``newsq COMMAND`` needs."""
    from newsq.ledger import Ledger

    client = state(settings, command)
    return Ledger(client, settings.key_prefix, retention_days=settings.ledger_retention_days)


Handler = Callable[[argparse.Namespace, Settings], int]


def embedded_state(command: str, *, required: bool = True) -> Callable[[Handler], Handler]:
    """Run ``newsq COMMAND`` on the store's embedded state when ``NEWSQ_BROKER_URL`` is
    unset (:func:`newsq.workers.embedded.attach`); with ``required``, none there is a
    one-line error, else the handler runs without a broker (the store answers)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(args: argparse.Namespace, settings: Settings) -> int:
            if settings.broker_url:
                return handler(args, settings)
            import redis

            from newsq.workers.embedded import attach, state_folder

            with attach(settings, command) as found:
                if found is None:
                    if not required:
                        return handler(args, settings)
                    folder = state_folder(settings.database_url)
                    raise ConfigError(f"'newsq {command}': no embedded state here yet "
                                      f"({folder} is made by 'newsq run') and no "
                                      "NEWSQ_BROKER_URL")  # fmt: skip
                if found.owned and getattr(args, "once", True) is False:
                    # a live view holding the state would keep the next `newsq run` waiting
                    if sys.stdout.isatty():
                        print("newsq: no 'newsq run' is using the embedded state: one table",
                              file=sys.stderr)  # fmt: skip
                    args = argparse.Namespace(**{**vars(args), "once": True})
                try:
                    return handler(args, found.settings)
                except redis.ConnectionError:
                    if found.owned or found.kept.running_url():
                        raise
                    raise ConfigError("the embedded Redis stopped while in use (the 'newsq "
                                      "run' it served ended): try again") from None  # fmt: skip

        return run

    return wrap


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str))
