"""Redis clients for the broker and for the shared state, made in one place.

The broker (``NEWSQ_BROKER_URL``) carries Celery's messages: its queues, the messages
taken and not acknowledged, kombu's routing tables. The shared state
(``NEWSQ_STATE_URL``, by default the broker's Redis) is everything else newsq keeps in
Redis: the URL ledger, the dedup index, politeness, robots.txt, the boilerplate
fingerprints, the counters and the throughput series. Every client of either is made
by :func:`state_redis` or :func:`broker_redis`.

Either URL may name Redis Sentinels instead of a server, as kombu's ``sentinel://``
transport reads them: ``sentinel://[:PASSWORD@]HOST[:PORT][/DB];sentinel://HOST2...``.
The client then asks the Sentinels for the master they call ``NEWSQ_SENTINEL_MASTER``
and asks again whenever a connection to it fails, so a failover costs a retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from newsq.errors import ConfigError

if TYPE_CHECKING:
    import redis

    from newsq.config.settings import Settings

SENTINEL_SCHEME = "sentinel://"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """A ``sentinel://`` URL read: the Sentinels, and the master's database and login
    (kombu's reading: the first password given is the master's, as is the database)."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, raw: str) -> SentinelURL:
        """Raises ValueError saying what is wrong."""
        sentinels: list[tuple[str, int]] = []
        db, username, password = None, None, None
        for part in (p.strip() for p in raw.split(";")):
            if not part:
                continue  # kombu ignores an empty entry (a trailing ';')
            if not part.startswith(SENTINEL_SCHEME):
                raise ValueError(f"{part!r} does not start with {SENTINEL_SCHEME}")
            parts = urlsplit(part)
            port = parts.port  # ValueError when it is no number or out of range
            if not parts.hostname:
                raise ValueError(f"{part!r} names no host")
            if port == 0:
                raise ValueError(f"{part!r}: the port must be 1 to 65535")
            path = parts.path.strip("/")
            if path and not path.isdigit():
                raise ValueError(f"the database {path!r} is not a number")
            if path and db is None:
                db = int(path)
            if parts.password is not None and password is None:
                username = unquote(parts.username) if parts.username else None
                password = unquote(parts.password)
            sentinels.append((parts.hostname, port or SENTINEL_PORT))
        if not sentinels:
            raise ValueError("it names no Sentinel")
        return cls(tuple(sentinels), db or 0, username, password)


def redis_for(url: str, master: str | None, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url``: a ``redis://``, ``rediss://`` or ``unix://``
    server, or the master ``master`` of the Sentinels a ``sentinel://`` URL names.
    ``options`` are redis-py's connection options (``socket_timeout``, ...)."""
    import redis

    if not url.startswith(SENTINEL_SCHEME):
        return redis.Redis.from_url(url, **options)
    from redis.sentinel import Sentinel

    if not master:
        raise ConfigError("a sentinel:// URL needs NEWSQ_SENTINEL_MASTER")
    parsed = SentinelURL.parse(url)
    # the Sentinels themselves take no password here (kombu's `sentinel_kwargs` does)
    sentinel_options = {"socket_timeout": options.get("socket_timeout") or 2.0}
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_options)
    client: redis.Redis = sentinel.master_for(
        master, redis_class=_sentinel_redis_class(), db=parsed.db, username=parsed.username,
        password=parsed.password, **options,
    )  # fmt: skip
    return client


@cache
def _sentinel_redis_class() -> type[redis.Redis]:
    import redis

    class _SentinelRedis(redis.Redis):
        """The master's client; closing it closes its connections to the Sentinels too."""

        def close(self) -> None:
            super().close()
            manager = getattr(self.connection_pool, "sentinel_manager", None)
            if manager is not None:
                manager.close()

    return _SentinelRedis


def state_url(settings: Settings) -> str | None:
    """The shared state's Redis URL: ``NEWSQ_STATE_URL``, else the broker's."""
    return settings.state_url or settings.broker_url


def state_redis(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the shared state's Redis (see the module docstring)."""
    url = state_url(settings)
    if not url:
        raise ConfigError("the shared state needs NEWSQ_BROKER_URL (a redis:// URL)")
    return redis_for(url, settings.sentinel_master, **options)


def broker_redis(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the broker's Redis, for what newsq reads of Celery's own keys (queue
    lengths, messages taken): Celery and kombu make their own connections."""
    if not settings.broker_url:
        raise ConfigError("the broker needs NEWSQ_BROKER_URL (a redis:// URL)")
    return redis_for(settings.broker_url, settings.sentinel_master, **options)
