"""What the command modules share: the broker they need, and JSON on stdout.

It imports none of them: ``cli`` imports ``commands``, which imports ``feeds_cmd``, and
every one of them imports this module, never one another backwards.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.ledger import Ledger


def need_broker(settings: Settings, command: str) -> str:
    """The broker URL ``newsq COMMAND`` needs; ConfigError when none is set."""
    if not settings.broker_url:
        raise ConfigError(f"'newsq {command}' needs NEWSQ_BROKER_URL (a redis:// URL)")
    return settings.broker_url


def broker(settings: Settings, command: str) -> redis.Redis:
    """A connection to the broker ``newsq COMMAND`` needs, checked with a ping."""
    client = redis.Redis.from_url(need_broker(settings, command))
    client.ping()
    return client


def open_ledger(settings: Settings, command: str) -> Ledger:
    """The URL ledger on the broker ``newsq COMMAND`` needs."""
    return Ledger(broker(settings, command), settings.key_prefix)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str))
