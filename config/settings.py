"""Settings, parsed once from ``NEWSQ_*`` environment variables.

This is the only module that reads the environment. A bad value raises
:class:`newsq.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from newsq.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///newsq.db"


@dataclass(frozen=True)
class AllowPrivate:
    """Which private/loopback destinations the fetcher may reach.

    ``all`` opens every private address (``NEWSQ_ALLOW_PRIVATE=1``); otherwise only the
    listed ``host:port`` pairs and networks are reachable.
    """

    all: bool = False
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> AllowPrivate:
        raw = (raw or "").strip()
        if raw in ("", "0", "false", "no", "off"):
            return cls()
        if raw in ("1", "true", "yes", "on", "*"):
            return cls(all=True)
        host_ports: set[tuple[str, int]] = set()
        networks = []
        for entry in (e.strip() for e in raw.split(",")):
            if not entry:
                continue
            try:
                if "/" in entry:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                    continue
                host, _, port = entry.rpartition(":")
                host = host.strip("[]").lower()
                if not host or not port.isdigit():
                    raise ValueError(entry)
                host_ports.add((host, int(port)))
            except ValueError:
                raise ConfigError(
                    f"NEWSQ_ALLOW_PRIVATE: {entry!r} is neither host:port nor a CIDR network"
                ) from None
        return cls(host_ports=frozenset(host_ports), networks=tuple(networks))

    def allows(self, address: str, port: int, host: str | None = None) -> bool:
        """True when a connection to ``address:port`` (named ``host``) is allowed."""
        if self.all:
            return True
        if (address, port) in self.host_ports or (host or "", port) in self.host_ports:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.networks)


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if value != value or value < minimum:
        raise ConfigError(f"{name}: {raw!r} must be a number >= {minimum:g}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    value = _number(env, name, default, minimum=minimum)
    if value != int(value):
        raise ConfigError(f"{name}: {env.get(name)!r} must be a whole number")
    return int(value)


def _host_rates(raw: str) -> tuple[tuple[str, float], ...]:
    rates = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        host, _, value = entry.partition("=")
        rate = _number({"NEWSQ_HOST_RATES": value}, "NEWSQ_HOST_RATES", -1.0)
        if not host.strip() or rate < 0:
            raise ConfigError(f"NEWSQ_HOST_RATES: {entry!r} is not host=rate")
        rates.append((host.strip().lower(), rate))
    return tuple(rates)


@dataclass(frozen=True)
class Settings:
    """Every ``NEWSQ_*`` setting, typed. Build with :meth:`from_env`."""

    broker_url: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    allow_private: AllowPrivate = field(default_factory=AllowPrivate)
    fetch_timeout: float = 30.0
    max_bytes: int = 10_000_000
    max_redirects: int = 5
    visibility_timeout: int = 3600
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    """Address the metrics server binds (``NEWSQ_METRICS_ADDR``; ``0.0.0.0`` in a container)."""
    keep_raw: bool = False
    """Keep each stored page's HTML, compressed, in the ``pages`` table (``NEWSQ_KEEP_RAW``)."""
    host_rate: float = 1.0
    host_concurrency: int = 4
    host_rates: tuple[tuple[str, float], ...] = ()
    """Per-host overrides of ``host_rate`` (``NEWSQ_HOST_RATES=host=rate,host:port=rate``)."""
    fetch_retries: int = 4
    fetch_batch: int = 8
    """Most URLs per fetch message when a surge is enqueued (see ``newsq.feeds.intake.batches``);
    1: one message per URL."""
    robots: bool = True
    max_deliveries: int = 3
    stuck_after: float = 0.0
    """Seconds without progress after which beat re-enqueues a non-terminal URL
    (``NEWSQ_STUCK_AFTER``); 0: twice the visibility timeout."""
    fetch_time_limit: float = 0.0
    """Soft time limit of a fetch task on a prefork pool; 0: ``3 * fetch_timeout + 30``."""
    process_time_limit: float = 120.0
    """Soft time limit of a process task (clean, dedup, store); the hard one is 30 s more."""
    dedup_window_days: float = 30.0
    boilerplate_min_pages: int = 5
    boilerplate_site_pages: int = 8
    boilerplate_ttl_days: float = 14.0
    dedup_jaccard: float = 0.5
    dedup_containment: float = 0.8
    dedup_capacity: int = 1_000_000
    user_agent: str = "newsq/0.1 (+https://github.com/newsq/newsq)"
    log_format: str = "text"
    log_level: str = "INFO"
    key_prefix: str = "newsq"
    feed_tick: float = 30.0
    """Seconds between beat ticks that look for due feeds (``NEWSQ_FEED_TICK``)."""
    feed_every: float = 600.0
    """A new feed's first polling interval when ``feeds add`` gives no ``--every``."""
    feed_min_every: float = 60.0
    feed_max_every: float = 86400.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        metrics = env.get("NEWSQ_METRICS_PORT", "").strip()
        log_format = env.get("NEWSQ_LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ConfigError(f"NEWSQ_LOG_FORMAT: {log_format!r} is not 'text' or 'json'")
        database_url = env.get("NEWSQ_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
        if not database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ConfigError(
                f"NEWSQ_DATABASE_URL: {database_url!r} is not a sqlite:/// or postgresql:// URL"
            )
        broker_url = env.get("NEWSQ_BROKER_URL", "").strip() or None
        if broker_url and not broker_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"NEWSQ_BROKER_URL: {broker_url!r} is not a redis:// URL")
        return cls(
            broker_url=broker_url,
            database_url=database_url,
            allow_private=AllowPrivate.parse(env.get("NEWSQ_ALLOW_PRIVATE")),
            fetch_timeout=_number(env, "NEWSQ_FETCH_TIMEOUT", 30.0, minimum=0.001),
            max_bytes=_integer(env, "NEWSQ_MAX_BYTES", 10_000_000, minimum=1),
            max_redirects=_integer(env, "NEWSQ_MAX_REDIRECTS", 5),
            visibility_timeout=_integer(env, "NEWSQ_VISIBILITY_TIMEOUT", 3600, minimum=10),
            metrics_port=_integer(env, "NEWSQ_METRICS_PORT", 0, minimum=1) if metrics else None,
            metrics_addr=env.get("NEWSQ_METRICS_ADDR", "").strip() or "127.0.0.1",
            keep_raw=env.get("NEWSQ_KEEP_RAW", "0").strip().lower() in ("1", "true", "yes", "on"),
            host_rate=_number(env, "NEWSQ_HOST_RATE", 1.0),
            host_concurrency=_integer(env, "NEWSQ_HOST_CONCURRENCY", 4, minimum=1),
            host_rates=_host_rates(env.get("NEWSQ_HOST_RATES", "")),
            fetch_retries=_integer(env, "NEWSQ_FETCH_RETRIES", 4),
            fetch_batch=_integer(env, "NEWSQ_FETCH_BATCH", 8, minimum=1),
            robots=env.get("NEWSQ_ROBOTS", "1").strip().lower() not in ("0", "false", "no", "off"),
            max_deliveries=_integer(env, "NEWSQ_MAX_DELIVERIES", 3, minimum=1),
            stuck_after=_number(env, "NEWSQ_STUCK_AFTER", 0.0),
            fetch_time_limit=_number(env, "NEWSQ_FETCH_TIME_LIMIT", 0.0),
            process_time_limit=_number(env, "NEWSQ_PROCESS_TIME_LIMIT", 120.0, minimum=1),
            dedup_window_days=_number(env, "NEWSQ_DEDUP_WINDOW_DAYS", 30.0, minimum=0.001),
            boilerplate_min_pages=_integer(env, "NEWSQ_BOILERPLATE_MIN_PAGES", 5, minimum=2),
            boilerplate_site_pages=_integer(env, "NEWSQ_BOILERPLATE_SITE_PAGES", 8, minimum=2),
            boilerplate_ttl_days=_number(env, "NEWSQ_BOILERPLATE_TTL_DAYS", 14.0, minimum=0.001),
            dedup_jaccard=_number(env, "NEWSQ_DEDUP_JACCARD", 0.5, minimum=0.05),
            dedup_containment=_number(env, "NEWSQ_DEDUP_CONTAINMENT", 0.8, minimum=0.05),
            dedup_capacity=_integer(env, "NEWSQ_DEDUP_CAPACITY", 1_000_000, minimum=1),
            user_agent=env.get("NEWSQ_USER_AGENT", "").strip() or cls.user_agent,
            log_format=log_format,
            log_level=(env.get("NEWSQ_LOG_LEVEL", "").strip() or "INFO").upper(),
            key_prefix=env.get("NEWSQ_KEY_PREFIX", "").strip() or "newsq",
            feed_tick=_number(env, "NEWSQ_FEED_TICK", 30.0, minimum=0.1),
            feed_every=_number(env, "NEWSQ_FEED_EVERY", 600.0, minimum=1),
            feed_min_every=_number(env, "NEWSQ_FEED_MIN_EVERY", 60.0, minimum=1),
            feed_max_every=_number(env, "NEWSQ_FEED_MAX_EVERY", 86400.0, minimum=1),
        )

    @property
    def stuck_threshold(self) -> float:
        """Seconds without progress that make a URL stuck (see ``stuck_after``)."""
        return self.stuck_after or 2.0 * self.visibility_timeout


@cache
def get_settings() -> Settings:
    """The process's settings, parsed on first use."""
    return Settings.from_env()
