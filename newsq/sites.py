"""Per-site settings, for the sites a team cares most about (``NEWSQ_SITES_FILE``).

The TOML file holds one table per host (``"*.example.com"``: that domain and every
subdomain; ``"host:port"``: that port only). The most exact table wins: ``host:port``,
then the host, then the nearest ``*.domain`` over it. Its keys, all optional::

    ["*.example.com"]                    # example.com, www.example.com, news.example.com
    rate = 0.5                           # requests per second (NEWSQ_HOST_RATE), 0: no limit
    concurrency = 1                      # requests in flight (NEWSQ_HOST_CONCURRENCY)
    user_agent = "newsq-partner/1.0"     # sent instead of NEWSQ_USER_AGENT; robots.txt token
    headers = { Cookie = "consent=yes" } # sent with every request to the site
    prune = ["//div[@class='newsletter']"]  # blocks removed before extraction
    body = "//div[@id='story-body']"     # the block(s) the article is taken from

The fetch stage (:mod:`newsq.fetch.client`, ``politeness``, ``robots``) reads the first
four, the clean stage (:mod:`newsq.clean.sites`) the last two. The file is read and
checked whole when the settings are parsed, so a bad entry is one line at start-up
naming the file, the table and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from newsq.errors import ConfigError

KEYS = ("rate", "concurrency", "user_agent", "headers", "prune", "body")
RATE_MAXIMUM = 1_000_000.0  # NEWSQ_HOST_RATE's bound
CONCURRENCY_MAXIMUM = 1_000_000_000
RESERVED_HEADERS = {
    "host": "newsq sends the URL's host",
    "content-length": "newsq sends no body",
    "transfer-encoding": "newsq sends no body",
    "connection": "the connection pool manages it",
    "accept-encoding": "newsq decodes only the encodings it asks for",
    "user-agent": "use user_agent",
}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110 token)."""


@dataclass(frozen=True)
class Site:
    """What newsq does differently on one site (None or empty: as everywhere else)."""

    rate: float | None = None
    concurrency: int | None = None
    user_agent: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    prune: tuple[str, ...] = ()
    body: str | None = None

    @property
    def cleans(self) -> bool:
        """True when the site has rules for the clean stage."""
        return bool(self.prune) or self.body is not None


@dataclass(frozen=True)
class Sites:
    """The tables of a sites file, by host (``host``, ``host:port`` or ``*.domain``)."""

    by_host: dict[str, Site] = field(default_factory=dict)

    def for_host(self, netloc: str) -> Site | None:
        """The site of ``host[:port]`` (a URL's netloc: the unit of politeness)."""
        if not self.by_host:
            return None
        netloc = netloc.rpartition("@")[2].lower()
        site = self.by_host.get(netloc)
        if site is not None:
            return site
        try:
            host = urlsplit(f"//{netloc}").hostname or ""
        except ValueError:
            return None
        site = self.by_host.get(host)
        while site is None and host:
            site = self.by_host.get(f"*.{host}")
            _, _, host = host.partition(".")
        return site

    def for_url(self, url: str | None) -> Site | None:
        """The site of ``url``'s host."""
        try:
            return self.for_host(urlsplit(url).netloc) if url else None
        except ValueError:
            return None


NO_SITES = Sites()


def sites_of(path: str | None) -> Sites:
    """The sites file at ``path`` (``NEWSQ_SITES_FILE``), read once per process; no
    sites when it is unset."""
    return load(path) if path else NO_SITES


def rule_for(path: str | None, url: str | None) -> Site | None:
    """The clean stage's rule of ``url``'s site in the sites file ``path``, if it has one."""
    site = sites_of(path).for_url(url)
    return site if site is not None and site.cleans else None


@cache
def load(path: str) -> Sites:
    """The sites in the TOML file at ``path``; ConfigError (one line) on a file that
    cannot be read, is not TOML, or holds a bad table name, key or value."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"NEWSQ_SITES_FILE: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"NEWSQ_SITES_FILE: {path} is not TOML: {exc}") from None
    sites: dict[str, Site] = {}
    names: dict[str, str] = {}
    for name, table in data.items():
        where = f"NEWSQ_SITES_FILE {path} [{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: a site's settings are a table ({', '.join(KEYS)})")
        unknown = sorted(set(table) - set(KEYS))
        if unknown and isinstance(table[unknown[0]], dict):  # [www.paper.example] unquoted
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}: a host name with dots "
                              f'is quoted, ["{name}.{unknown[0]}..."]')  # fmt: skip
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} ({', '.join(KEYS)})")
        key = _host_key(name, where)
        if key in names:  # TOML keys differ in case or a trailing dot; a host does not
            raise ConfigError(f"{where}: the same host as [{names[key]}]")
        names[key] = name
        sites[key] = _site(table, where)
    return Sites(sites)


def _host_key(name: str, where: str) -> str:
    key = name.strip().lower().rstrip(".")
    host = key.removeprefix("*.")
    try:
        parts = urlsplit(f"//{host}")
        ok = bool(parts.hostname) and parts.netloc == host and parts.port != 0
    except ValueError:  # a port that is not a number, or over 65535
        ok = False
    if not ok or host.endswith(":") or any(c in host for c in "@* \t"):
        raise ConfigError(f"{where}: a table is named for a host, `*.domain` or `host:port`")
    return key


def _site(table: dict[str, Any], where: str) -> Site:
    prune = table.get("prune", [])
    if not isinstance(prune, list):
        raise ConfigError(f"{where} prune: a list of XPath expressions")
    body = table.get("body")
    agent = table.get("user_agent")
    return Site(
        rate=_rate(table.get("rate"), f"{where} rate"),
        concurrency=_concurrency(table.get("concurrency"), f"{where} concurrency"),
        user_agent=None if agent is None else _header_value(agent, f"{where} user_agent"),
        headers=_headers(table.get("headers", {}), f"{where} headers"),
        prune=tuple(_xpath(p, f"{where} prune") for p in prune),
        body=None if body is None else _xpath(body, f"{where} body"),
    )


def _rate(value: object, where: str) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not 0 <= value <= RATE_MAXIMUM):  # fmt: skip
        raise ConfigError(f"{where}: {value!r} is not requests per second, "
                          f"0 (no limit) to {RATE_MAXIMUM:.15g}")  # fmt: skip
    return float(value)


def _concurrency(value: object, where: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= CONCURRENCY_MAXIMUM:  # not a bool either
        raise ConfigError(f"{where}: {value!r} is not a whole number of requests, "
                          f"1 to {CONCURRENCY_MAXIMUM}")  # fmt: skip
    return value


def _header_value(value: object, where: str) -> str:
    # httpx refuses a value that is not ASCII and h11 one with a control character:
    # every request to the site would fail
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: a non-empty string")
    if not value.isascii() or not value.isprintable():  # not shown: it may be a secret
        raise ConfigError(f"{where}: must be printable ASCII (it is an HTTP header)")
    return value.strip()


def _headers(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: a table of header names and values ({{ Cookie = "..." }})')
    headers = []
    for name, text in value.items():
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"{where}: {name!r} is not an HTTP header name")
        why = RESERVED_HEADERS.get(name.lower())
        if why is not None:
            raise ConfigError(f"{where}: {name} cannot be set here ({why})")
        headers.append((name, _header_value(text, f"{where} {name}")))
    return tuple(headers)


def _xpath(path: object, where: str) -> str:
    from lxml import etree  # here: the fetch stage and the CLI read this module too

    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}: an XPath expression must be a non-empty string")
    try:
        etree.XPath(path)
    except etree.XPathSyntaxError as exc:
        raise ConfigError(f"{where}: {path!r} is not an XPath expression ({exc})") from None
    return path
