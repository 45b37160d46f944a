"""Settings, parsed once from ``NEWSQ_*`` environment variables.

This is the only module that reads the environment. Each setting is declared once, as a
field of :class:`Settings`: its variable is ``NEWSQ_`` and the field's name in capitals,
and the field carries its default, lower bound, help and parser (:data:`SETTINGS` lists
them; the README's settings table is checked against that list). A bad value raises
:class:`newsq.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache, partial
from typing import Any, TypeVar

from newsq import __version__
from newsq.clean.limits import MAX_ELEMENTS, TIME_BUDGET
from newsq.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///newsq.db"
DAYS_MINIMUM = 0.00001
"""The shortest time window in days (under a second): tests compress months into minutes."""
DAYS_MAXIMUM = 3650.0
SECONDS_MAXIMUM = 365 * 86400.0
"""The longest time in seconds, a year: a longer one is a typo (or ``inf``), and timers
and socket timeouts overflow not far above it (``threading.TIMEOUT_MAX``, ``time_t``)."""
COUNT_MAXIMUM = 1_000_000_000
"""The largest value a number or integer setting takes unless it says otherwise."""
PORT_MAXIMUM = 65535
RATE_MAXIMUM = 1_000_000.0
"""Requests per second per host; `0` is the way to say "no limit"."""

_T = TypeVar("_T")
_Int = TypeVar("_Int", bound=int | None)
_Str = TypeVar("_Str", bound=str | None)

Parser = Callable[[str, str], Any]
"""``parse(variable, value)``: the setting from a variable's stripped, non-empty value."""

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


@dataclass(frozen=True)
class AllowPrivate:
    """Which private/loopback destinations the fetcher may reach.

    ``all`` opens every private address (``NEWSQ_ALLOW_PRIVATE=1``); otherwise only the
    listed hosts and addresses (any port), ``host:port`` pairs and networks are reachable.
    """

    all: bool = False
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()
    """Host names and addresses allowed on any port (addresses in ``ip_address`` form)."""

    @classmethod
    def parse(cls, raw: str | None, env: str = "NEWSQ_ALLOW_PRIVATE") -> AllowPrivate:
        raw = (raw or "").strip()
        if raw in ("", "0", "false", "no", "off"):
            return cls()
        if raw in ("1", "true", "yes", "on", "*"):
            return cls(all=True)
        host_ports: set[tuple[str, int]] = set()
        hosts: set[str] = set()
        networks = []
        for entry in (e.strip() for e in raw.split(",")):
            if not entry:
                continue
            try:
                if "/" in entry:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                elif bare := _bare_host(entry):
                    hosts.add(bare)
                else:
                    host, _, port = entry.rpartition(":")
                    host = host.strip("[]").lower()
                    if not host or not (port.isdigit() and 1 <= int(port) <= PORT_MAXIMUM):
                        raise ValueError(entry)
                    host_ports.add((host, int(port)))
            except ValueError:
                raise ConfigError(
                    f"{env}: {entry!r} is not a host, host:port or CIDR network"
                ) from None
        return cls(host_ports=frozenset(host_ports), networks=tuple(networks),
                   hosts=frozenset(hosts))  # fmt: skip

    def allows(self, address: str, port: int, host: str | None = None) -> bool:
        """True when a connection to ``address:port`` (named ``host``) is allowed."""
        if self.all:
            return True
        if (address, port) in self.host_ports or (host or "", port) in self.host_ports:
            return True
        ip = ipaddress.ip_address(address)
        if str(ip) in self.hosts or (host or "").lower() in self.hosts:
            return True
        return any(ip in net for net in self.networks)


_HOST = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _bare_host(entry: str) -> str | None:
    """``entry`` as an address (``[::1]`` too) or a host name without a port, else None."""
    try:
        return str(ipaddress.ip_address(entry.strip("[]")))
    except ValueError:
        pass
    name = entry.lower().rstrip(".")
    return name if _HOST.fullmatch(name) else None


@dataclass(frozen=True)
class SettingSpec:
    """One setting as declared on :class:`Settings`."""

    name: str
    """The :class:`Settings` field."""
    default: Any
    help: str
    kind: str
    """``number``, ``integer``, ``flag``, ``text``, ``choice``, ``url``, or a special one."""
    parse: Parser
    minimum: float | None = None
    maximum: float | None = None

    @property
    def env(self) -> str:
        return f"NEWSQ_{self.name.upper()}"


def setting(
    default: _T,
    *,
    help: str,
    kind: str,
    parse: Parser,
    minimum: float | None = None,
    maximum: float | None = None,
) -> _T:
    """A :class:`Settings` field: ``default`` while its variable is unset or blank."""
    meta = {"help": help, "kind": kind, "parse": parse, "minimum": minimum, "maximum": maximum}
    return field(default=default, metadata=meta)


def _number(env: str, raw: str, minimum: float, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{env}: {raw!r} is not a number") from None
    if value != value or value < minimum:
        raise ConfigError(f"{env}: {raw!r} must be a number >= {minimum:g}")
    if value > maximum:  # inf too
        raise ConfigError(f"{env}: {raw!r} must be a number <= {maximum:.15g}")
    return value


def _integer(env: str, raw: str, minimum: int, maximum: int) -> int:
    value = _number(env, raw, minimum, maximum)
    if not value.is_integer():
        raise ConfigError(f"{env}: {raw!r} must be a whole number")
    return int(value)


def number(
    default: float, *, help: str, minimum: float = 0, maximum: float = COUNT_MAXIMUM
) -> float:
    parse = partial(_number, minimum=minimum, maximum=maximum)
    return setting(default, help=help, kind="number", parse=parse, minimum=minimum,
                   maximum=maximum)  # fmt: skip


def integer(default: _Int, *, help: str, minimum: int = 0, maximum: int = COUNT_MAXIMUM) -> _Int:
    parse = partial(_integer, minimum=minimum, maximum=maximum)
    return setting(default, help=help, kind="integer", parse=parse, minimum=minimum,
                   maximum=maximum)  # fmt: skip


def flag(default: bool, *, help: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, in any case."""

    def parse(env: str, raw: str) -> bool:
        if raw.lower() in _ON:
            return True
        if raw.lower() in _OFF:
            return False
        # a typo ("of", "ture") keeping the default would go unnoticed
        raise ConfigError(f"{env}: {raw!r} is not {'/'.join(_ON)} or {'/'.join(_OFF)}")

    return setting(default, help=help, kind="flag", parse=parse)


def text(default: _Str, *, help: str) -> _Str:
    return setting(default, help=help, kind="text", parse=lambda e, r: r)


def _header_value(env: str, raw: str) -> str:
    # httpx sends header values as ASCII (it raises on any other) and h11 refuses
    # control characters: every fetch would fail
    if not raw.isascii() or not raw.isprintable():
        raise ConfigError(f"{env}: {raw!r} must be printable ASCII (it is an HTTP header)")
    return raw


def header_text(default: _Str, *, help: str) -> _Str:
    """Text sent as an HTTP header value."""
    return setting(default, help=help, kind="text", parse=_header_value)


def choice(default: str, choices: tuple[str, ...], *, help: str) -> str:
    """One of ``choices``, given in any case, spelled as declared."""
    by_key = {c.lower(): c for c in choices}
    shown = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"

    def parse(env: str, raw: str) -> str:
        value = by_key.get(raw.lower())
        if value is None:
            raise ConfigError(f"{env}: {raw.lower()!r} is not {shown}")
        return value

    return setting(default, help=help, kind="choice", parse=parse)


def url(default: _Str, schemes: tuple[str, ...], *, shown: str, help: str,
        check: Parser) -> _Str:  # fmt: skip
    """A URL starting with one of ``schemes`` (``shown`` names them in the error) that
    ``check`` (its port, its options) accepts."""

    def parse(env: str, raw: str) -> str:
        if not raw.startswith(schemes):
            raise ConfigError(f"{env}: {_masked(raw)!r} is not {shown}")
        return check(env, raw)

    return setting(default, help=help, kind="url", parse=parse)


def _masked(raw: str) -> str:
    """A URL as an error may show it: without its password."""
    return re.sub(r"(//[^/@:]*:)[^@]*@", r"\1***@", raw)


def _bad_port(env: str, raw: str, port: int | None = None) -> ConfigError:
    """The error of a URL whose port is not a whole number from 1 to 65535 (or whose
    IPv6 host has no closing bracket, which makes its port unreadable too)."""
    host = raw.partition("//")[2].rpartition("@")[2]
    if port is None and "[" in host and "]" not in host:
        return ConfigError(f"{env}: {_masked(raw)!r}: the IPv6 address has no closing ]")
    return ConfigError(f"{env}: {_masked(raw)!r}: the port must be 1 to {PORT_MAXIMUM}")


def _redis_url(env: str, raw: str) -> str:
    # redis-py would raise on these only when connecting, or not at all (it reads the
    # port 0 as 6379, and a database that is not a number as none); it reads the URL
    # with urlsplit, as here
    from urllib.parse import urlsplit

    from redis.connection import ConnectionPool

    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        rest = raw.partition("//")[2]
        cut = re.search(r"[/?#]", rest)
        if cut and "@" in rest[cut.start() :]:  # urlsplit's host ended inside the password
            raise ConfigError(f"{env}: {_masked(raw)!r}: a '/', '?' or '#' in its password "
                              "must be %-encoded") from None  # fmt: skip
        raise _bad_port(env, raw) from None
    if port == 0:
        raise _bad_port(env, raw, port)
    try:
        db = parts.path.strip("/")
        if parts.scheme != "unix" and db and not db.isdigit():
            raise ValueError(f"the database {db!r} is not a number")
        pool = ConnectionPool.from_url(raw)
        # an unknown option in the query raises when a connection is made (not opened)
        pool.connection_class(**pool.connection_kwargs)
        for key, value in pool.connection_kwargs.items():
            if isinstance(value, float) and not 0 <= value <= SECONDS_MAXIMUM:
                raise ValueError(f"{key}={value:g} is out of range")
    except (ValueError, TypeError) as exc:
        why = re.sub(r".*unexpected keyword argument", "unknown option", str(exc))
        raise ConfigError(f"{env}: {_masked(raw)!r} is not a usable Redis URL: {why}") from None
    return raw


def _sentinel_url(env: str, raw: str) -> str:
    from newsq.connections import SentinelURL

    return _read_by(SentinelURL.parse, "Sentinel", env, raw)


def _read_by(parse: Callable[[str], object], kind: str, env: str, raw: str) -> str:
    """``raw`` when ``parse`` reads it, else its ValueError as one line naming ``env``."""
    try:
        parse(raw)
    except ValueError as exc:
        why = "the port must be 1 to 65535" if "Port" in str(exc) else str(exc)
        raise ConfigError(f"{env}: {_masked(raw)!r} is not a usable {kind} URL: "
                          f"{_masked(why)}") from None  # fmt: skip
    return raw


def _any_redis_url(env: str, raw: str) -> str:
    """A Redis server's URL, or Sentinels' (``sentinel://``, see ``newsq.connections``)."""
    return _sentinel_url(env, raw) if raw.startswith("sentinel://") else _redis_url(env, raw)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")
STATE_SCHEMES = (*REDIS_SCHEMES, "redis+cluster://", "rediss+cluster://")


def _state_url(env: str, raw: str) -> str:
    """The broker's kinds of URL, or a Redis Cluster's (``redis+cluster://``)."""
    from newsq.connections import ClusterURL, is_cluster_url

    if not is_cluster_url(raw):
        return _any_redis_url(env, raw)
    return _read_by(ClusterURL.parse, "Redis Cluster", env, raw)


def _master_name(env: str, raw: str) -> str:
    if not raw.isascii() or any(c.isspace() for c in raw):
        raise ConfigError(f"{env}: {raw!r} is not a Sentinel master name (ASCII, no spaces)")
    return raw


_SQLITE_FILE = re.compile(r"sqlite(\+\w+)?:///")
"""A SQLite URL with an empty host (``sqlite:///PATH``), which SQLAlchemy's parse accepts
whatever PATH holds: ``newsq run`` starts its workers before it imports SQLAlchemy."""


def _database_url(env: str, raw: str) -> str:
    if _SQLITE_FILE.match(raw):  # no host, so no port: SQLAlchemy's import can wait
        return raw
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        port = make_url(raw).port  # a password may hold "/" and "?" here: its own parse
    except ArgumentError:
        raise ConfigError(f"{env}: {_masked(raw)!r} is not a database URL") from None
    except ValueError:  # int() of the port
        raise _bad_port(env, raw) from None
    if port is not None and not 1 <= port <= PORT_MAXIMUM:
        raise _bad_port(env, raw, port)
    return raw


def _webhook_url(env: str, raw: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise _bad_port(env, raw) from None
    if port == 0:
        raise _bad_port(env, raw, port)
    if not parts.hostname:
        raise ConfigError(f"{env}: {_masked(raw)!r} has no host")
    return raw


def _parsed(spec: SettingSpec, raw: str) -> Any:
    """``spec``'s parse of ``raw``: what a library it calls refuses is a bad value too."""
    try:
        return spec.parse(spec.env, raw)
    except ConfigError:
        raise
    except Exception as exc:  # a path holding a NUL, ...: one line, never a traceback
        raise ConfigError(f"{spec.env}: {raw!r}: {exc}") from None


def _printable(env: str, raw: str, shown: str | None = None) -> None:
    """``raw`` is printable: no setting takes a control character, and bytes that
    are not UTF-8 (lone surrogates in ``os.environ``) cannot be sent to Redis or a log.
    ``shown``: how the error names the value (a secret's is not printed)."""
    if not raw.isprintable():
        raise ConfigError(f"{env}: {shown or repr(raw)} holds a control character or bytes "
                          "that are not UTF-8")  # fmt: skip


def _module_name(env: str, raw: str) -> str:
    if not all(part.isidentifier() for part in raw.split(".")):
        raise ConfigError(f"{env}: {raw!r} is not a Python module name (a.b.c)")
    return raw


def _sites_file(env: str, raw: str) -> str:
    from newsq.sites import load  # read and checked now: a typo is a line at start-up

    load(raw)
    return raw


def _bind_address(env: str, raw: str) -> str:
    if _bare_host(raw) is None:
        raise ConfigError(f"{env}: {raw!r} is not an address or host name")
    return raw


def _host_rates(env: str, raw: str) -> tuple[tuple[str, float], ...]:
    rates = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        host, _, value = entry.partition("=")
        rate = _number(env, value.strip(), 0, RATE_MAXIMUM) if value.strip() else -1.0
        if not host.strip() or rate < 0:
            raise ConfigError(f"{env}: {entry!r} is not host=rate")
        rates.append((host.strip().lower(), rate))
    return tuple(rates)


@dataclass(frozen=True)
class Settings:
    """Every ``NEWSQ_*`` setting, typed. Build with :meth:`from_env`."""

    broker_url: str | None = url(
        None,
        REDIS_SCHEMES,
        shown="a redis:// or sentinel:// URL",
        check=_any_redis_url,
        help="Redis URL of the broker and the shared state",
    )
    state_url: str | None = url(
        None,
        STATE_SCHEMES,
        shown="a redis://, sentinel:// or redis+cluster:// URL",
        check=_state_url,
        help="Redis URL of the shared state (ledger, dedup index, politeness, robots.txt, "
        "boilerplate, counters), when it is not the broker's",
    )
    sentinel_master: str | None = setting(
        None,
        kind="name",
        parse=_master_name,
        help="the master's name (`sentinel monitor NAME ...`) the Sentinels of a "
        "`sentinel://` broker or state URL are asked for",
    )
    database_url: str = url(
        DEFAULT_DATABASE_URL,
        ("sqlite:", "postgresql:", "postgresql+psycopg:"),
        shown="a sqlite:/// or postgresql:// URL",
        check=_database_url,
        help="`sqlite:///PATH` or `postgresql://...` (psycopg 3)",
    )
    # AllowPrivate is frozen: one instance can be every Settings' default
    allow_private: AllowPrivate = setting(  # noqa: RUF009
        AllowPrivate(),
        kind="allow-list",
        parse=lambda e, r: AllowPrivate.parse(r),
        help="`1` lets the fetcher reach loopback/private addresses; or a comma list of "
        "hosts and addresses (any port), `host:port` and CIDR entries",
    )
    fetch_timeout: float = number(
        30.0,
        minimum=0.001,
        maximum=SECONDS_MAXIMUM,
        help="total seconds per request, headers to last byte",
    )
    max_bytes: int = integer(
        10_000_000, minimum=1, help="largest body accepted, after decompression"
    )
    max_redirects: int = integer(5, help="redirects followed before `too_many_redirects`")
    visibility_timeout: int = integer(
        3600,
        minimum=10,
        maximum=int(SECONDS_MAXIMUM),
        help="seconds before a task taken by a dead worker is delivered again",
    )
    metrics_port: int | None = integer(
        None,
        minimum=1,
        maximum=PORT_MAXIMUM,
        help="serve Prometheus metrics of a worker (all its processes) at "
        "`http://127.0.0.1:PORT/metrics`; `newsq run` gives its local workers PORT, PORT+1, ...",
    )
    metrics_addr: str = setting(
        "127.0.0.1",
        kind="address",
        parse=_bind_address,
        help="address the metrics server binds (`0.0.0.0` in a container)",
    )
    keep_raw: bool = flag(
        False,
        help="`1` keeps each stored page's HTML, compressed, for `newsq export --warc`",
    )
    host_rate: float = number(
        1.0,
        maximum=RATE_MAXIMUM,
        help="requests per second per host, shared by all workers; `0` = no limit",
    )
    host_concurrency: int = integer(
        4, minimum=1, help="requests in flight per host, shared by all workers"
    )
    host_rates: tuple[tuple[str, float], ...] = setting(
        (),
        kind="host rates",
        parse=_host_rates,
        help="per-host overrides, `host=rate,host:port=rate`",
    )
    fetch_retries: int = integer(
        4,
        maximum=100,  # the backoff's 2**attempt overflows a float past 1023
        help="retries of a retryable fetch failure (timeout, 429, 5xx, reset), "
        "with exponential backoff and jitter",
    )
    # batches are cut by newsq.feeds.intake.batches; the README says when and why
    fetch_batch: int = integer(
        8,
        minimum=1,
        help="most URLs per fetch message when many are enqueued at once "
        "(`newsq run`, `newsq enqueue`)",
    )
    robots: bool = flag(True, help="honour robots.txt (and its Crawl-delay); `0` turns it off")
    max_deliveries: int = integer(
        3,
        minimum=1,
        help="deliveries that never finish (worker crashed) before a URL ends `failed`/`poison`",
    )
    stuck_after: float = number(
        0.0,
        maximum=SECONDS_MAXIMUM,
        help="seconds without progress after which beat's `newsq.requeue_stuck` re-enqueues "
        "a non-terminal URL (only while the queues are empty)",
    )  # 0: see stuck_threshold
    fetch_time_limit: float = number(
        0.0,
        maximum=SECONDS_MAXIMUM,
        help="soft time limit of one fetch task in seconds "
        "(`0`: derived from `NEWSQ_FETCH_TIMEOUT`)",
    )  # 0: 3 * fetch_timeout + 30, in newsq.config.celery
    process_time_limit: float = number(
        120.0,
        minimum=1,
        maximum=SECONDS_MAXIMUM,
        help="soft time limit of one clean/dedup/store task in seconds",
    )  # the hard limit is 30 s more
    clean_max_elements: int = integer(
        MAX_ELEMENTS,
        minimum=1,
        help="most HTML elements in a page the clean stage works on (and 4 `<` per element "
        "in its markup, counted before parsing); a page over it ends `skipped`/`too_complex`",
    )
    clean_time_budget: float = number(
        TIME_BUDGET,
        minimum=0.001,
        maximum=SECONDS_MAXIMUM,
        help="seconds the clean stage may spend on one page, checked between its passes; "
        "a page over it ends `skipped`/`too_complex`",
    )
    sites_file: str | None = setting(
        None,
        kind="file",
        parse=_sites_file,
        help="a TOML file of per-site settings, per host, `host:port` or `*.domain`: request "
        "`rate` and `concurrency`, `user_agent`, extra request `headers`, and the clean "
        "stage's XPath rules, blocks to remove (`prune`) and the block to take the article "
        "from (`body`)",
    )
    dedup_window_days: float = number(
        30.0,
        minimum=DAYS_MINIMUM,
        maximum=DAYS_MAXIMUM,
        help="how long the dedup index remembers a story",
    )
    boilerplate_min_pages: int = integer(
        5,
        minimum=2,
        help="distinct pages of a site a paragraph must appear on to count as the site's template",
    )
    boilerplate_site_pages: int = integer(
        8,
        minimum=2,
        help="distinct pages under which a site is young: its short pages without known "
        "template wait a few seconds for more of its pages (template paragraphs go from "
        "a site's third page on)",
    )
    boilerplate_ttl_days: float = number(
        14.0,
        minimum=DAYS_MINIMUM,
        maximum=DAYS_MAXIMUM,
        help="how long per-site paragraph fingerprints are kept",
    )
    boilerplate_hold_seconds: float = number(
        15.0,
        maximum=600.0,
        help="longest a young site's short page waits for more of its pages while they "
        "are on their way (queued for the host or being fetched), so its site's template "
        "is known when it is judged; 0: never waits",
    )
    ledger_retention_days: float = number(
        7.0,
        minimum=DAYS_MINIMUM,
        maximum=DAYS_MAXIMUM,
        help="how long a URL's ledger entry stays in Redis after it reached a terminal "
        "state (the store keeps the outcome for good)",
    )
    dedup_jaccard: float = number(
        0.5,
        minimum=0.05,
        maximum=1.0,
        help="estimated Jaccard similarity above which two texts are one story",
    )
    dedup_containment: float = number(
        0.8,
        minimum=0.05,
        maximum=1.0,
        help="share of the shorter text contained in the longer above which they are "
        "one story (trimmed copies)",
    )
    dedup_capacity: int = integer(
        1_000_000,
        minimum=1,
        maximum=2**26,  # its filter of 64 bits an article must fit a Redis string's 2**32
        help="articles expected per window; sizes the index's compact hash buckets",
    )
    user_agent: str = header_text(
        f"newsq/{__version__}",
        help="the User-Agent sent (robots.txt is matched on `newsq`)",
    )
    log_format: str = choice(
        "text", ("text", "json"), help="`text` or `json` (one object per line)"
    )
    log_level: str = choice(
        "INFO",
        ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="log level of workers: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`",
    )
    key_prefix: str = text(
        "newsq",
        help="prefix of every Redis key (queues included), to share one Redis between deployments",
    )
    feed_tick: float = number(
        2.0,
        minimum=0.1,
        maximum=SECONDS_MAXIMUM,
        help="seconds between beat's checks for due feeds",
    )
    feed_every: float = number(
        600.0,
        minimum=1,
        maximum=SECONDS_MAXIMUM,
        help="starting interval of a feed added without `--every` (seconds)",
    )
    feed_min_every: float = number(
        60.0,
        minimum=1,
        maximum=SECONDS_MAXIMUM,
        help="shortest adaptive interval of a feed added without `--min` (seconds)",
    )
    feed_max_every: float = number(
        86400.0,
        minimum=1,
        maximum=SECONDS_MAXIMUM,
        help="longest adaptive interval of a feed added without `--max` (seconds)",
    )
    discovery_max_urls: int = integer(
        100_000,
        minimum=1,
        help="most article URLs one feed or sitemap (with its child sitemaps) gives",
    )
    discovery_max_depth: int = integer(
        3, help="levels of sitemap indexes followed below a sitemap given or polled"
    )
    discovery_max_requests: int = integer(
        200,
        minimum=1,
        help="most requests (child sitemaps and redirect hops included) the discovery "
        "of one feed or sitemap makes",
    )
    discovery_timeout: float = number(
        120.0,
        minimum=0.001,
        maximum=SECONDS_MAXIMUM,
        help="seconds the discovery of one feed or sitemap may take, politeness waits included",
    )
    max_age_days: float = number(
        30.0,
        maximum=DAYS_MAXIMUM,
        help="a feed entry or sitemap URL dated longer ago than this (days) is not enqueued; "
        "`0`: no limit",
    )
    webhook_url: str | None = url(
        None,
        ("http://", "https://"),
        shown="an http:// or https:// URL",
        check=_webhook_url,
        help="each event (as `newsq events` prints it) is POSTed to this URL, signed, in "
        "event id order, retried until it answers 2xx",
    )
    webhook_secret: str | None = setting(
        None,
        kind="secret",  # never shown in an error
        parse=lambda e, r: r,
        help="the key of the HMAC-SHA256 signature of each webhook body "
        "(`X-Newsq-Signature: sha256=<hex>`); needed with `NEWSQ_WEBHOOK_URL`",
    )
    # frozen, as allow_private's
    webhook_allow: AllowPrivate = setting(  # noqa: RUF009
        AllowPrivate(),
        kind="allow-list",
        parse=lambda e, r: AllowPrivate.parse(r, e),
        help="loopback/private webhook targets allowed, as `NEWSQ_ALLOW_PRIVATE` lists them",
    )
    webhook_timeout: float = number(
        10.0,
        minimum=0.001,
        maximum=SECONDS_MAXIMUM,
        help="seconds one webhook POST may take before it counts as failed",
    )
    webhook_backoff_max: float = number(
        60.0,
        minimum=0.001,
        maximum=SECONDS_MAXIMUM,
        help="longest wait between retries of a failing webhook (exponential, jittered)",
    )
    webhook_lease: float = number(
        10.0,
        minimum=0.1,
        maximum=SECONDS_MAXIMUM,
        help="seconds the one webhook deliverer's Redis lease lasts unrenewed: another "
        "worker takes over that long after its holder died",
    )
    webhook_concurrency: int = integer(
        1,
        minimum=1,
        maximum=64,
        help="stories whose events are POSTed at once, each story's one after another in "
        "id order; `1` sends every event in id order",
    )
    webhook_drain: float = number(
        30.0,
        maximum=SECONDS_MAXIMUM,
        help="seconds `newsq run` and `newsq demo` wait at the end for the webhook to "
        "take the events not delivered yet",
    )
    celery_config: str | None = setting(
        None,
        kind="module",
        parse=_module_name,
        help="a Python module of extra Celery settings (`broker_use_ssl`, "
        "`broker_transport_options`, `worker_max_tasks_per_child`, ...) loaded over "
        "newsq's own; a setting newsq itself sets is an error",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in SETTINGS:
            raw = env.get(spec.env, "").strip()
            if raw:
                # so no parser sees a control character
                _printable(spec.env, raw, "its value" if spec.kind == "secret" else None)
                values[spec.name] = _parsed(spec, raw)
        _check_redis_urls(values)
        if values.get("webhook_url") and not values.get("webhook_secret"):
            raise ConfigError("NEWSQ_WEBHOOK_SECRET: not set, and NEWSQ_WEBHOOK_URL is: "
                              "it signs every webhook POST")  # fmt: skip
        return cls(**values)

    @property
    def stuck_threshold(self) -> float:
        """Seconds without progress that make a URL stuck (see ``stuck_after``)."""
        return self.stuck_after or 2.0 * self.visibility_timeout


def _check_redis_urls(values: Mapping[str, Any]) -> None:
    """What the broker and state URLs need of each other and of the master name."""
    if values.get("state_url") and not values.get("broker_url"):
        raise ConfigError("NEWSQ_STATE_URL: needs NEWSQ_BROKER_URL too (without it the "
                          "embedded Redis holds the broker and the state both)")  # fmt: skip
    for name in ("broker_url", "state_url"):
        if str(values.get(name)).startswith("sentinel://") and not values.get("sentinel_master"):
            raise ConfigError(f"NEWSQ_{name.upper()}: a sentinel:// URL needs "
                              "NEWSQ_SENTINEL_MASTER, the name its Sentinels monitor")  # fmt: skip


SETTINGS: tuple[SettingSpec, ...] = tuple(
    SettingSpec(name=f.name, default=f.default, **f.metadata) for f in fields(Settings)
)
"""Every setting's declaration, in the order of :class:`Settings`' fields."""


@cache
def get_settings() -> Settings:
    """The process's settings, parsed on first use."""
    return Settings.from_env()
