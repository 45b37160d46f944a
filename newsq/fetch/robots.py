"""robots.txt: fetched once per site for all workers, cached in Redis, honoured.

Per RFC 9309: a 2xx file is parsed and obeyed; a 4xx (no file) means everything is
allowed; a 5xx or an unreachable server means everything is disallowed, for a short
while only, so the site is asked again soon. Cached verdicts expire (a day for files
and 4xx, ten minutes for failures). A ``Crawl-delay`` for our user agent is handed to
:mod:`newsq.fetch.politeness`, which then spaces that host's requests at least that far apart.

Each process keeps parsed files for a few minutes so a busy host is not re-parsed per URL.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import redis

from newsq import errors
from newsq.config.settings import Settings
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import record_crawl_delay
from newsq.records import FetchResult

log = logging.getLogger(__name__)

FILE_TTL = 86400
FAILURE_TTL = 600
LOCAL_TTL = 300.0
MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB
_ALLOW_ALL = "A"
_DISALLOW_ALL = "D"
_FILE = "F"


@dataclass(frozen=True)
class _Rules:
    kind: str
    parser: RobotFileParser | None = None

    def allows(self, agent: str, url: str) -> bool:
        if self.kind == _ALLOW_ALL:
            return True
        if self.kind == _DISALLOW_ALL or self.parser is None:
            return False
        return self.parser.can_fetch(agent, url)

    def crawl_delay(self, agent: str) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(agent)
        return float(delay) if delay is not None else None


def _parse(text: str) -> RobotFileParser:
    parser = RobotFileParser()
    parser.parse(text.splitlines())
    return parser


def agent_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched against (``newsq`` for ``newsq/0.1 ...``)."""
    return user_agent.split("/", 1)[0].split()[0] if user_agent.strip() else "*"


class RobotsCache:
    """Answers "may we fetch this URL?" from a shared, expiring robots.txt cache."""

    def __init__(self, client: redis.Redis, settings: Settings, fetcher: Fetcher) -> None:
        self._client = client
        self._settings = settings
        self._fetcher = fetcher
        self._prefix = settings.key_prefix
        self.agent = agent_token(settings.user_agent)
        self._local: dict[str, tuple[float, _Rules]] = {}
        self._lock = threading.Lock()

    def allowed(self, url: str) -> bool:
        """True when robots.txt lets us fetch ``url``; True too for a URL with no site
        (the fetch itself reports ``invalid_url``). Redis errors propagate."""
        origin = _origin(url)
        if origin is None:
            return True
        allowed = self._rules(origin).allows(self.agent, url)
        if not allowed:
            log.info("robots.txt of %s disallows %s", origin, url)
        return allowed

    def crawl_delay(self, url: str) -> float | None:
        """The Crawl-delay our agent gets on ``url``'s site, or None."""
        origin = _origin(url)
        return None if origin is None else self._rules(origin).crawl_delay(self.agent)

    # -- internals -------------------------------------------------------------------

    def _rules(self, origin: str) -> _Rules:
        now = time.monotonic()
        with self._lock:
            cached = self._local.get(origin)
        if cached and cached[0] > now:
            return cached[1]
        rules = self._shared(origin)
        with self._lock:
            if len(self._local) > 10_000:
                self._local.clear()
            self._local[origin] = (now + LOCAL_TTL, rules)
        return rules

    def _shared(self, origin: str) -> _Rules:
        key = f"{self._prefix}:robots:{origin}"
        raw: bytes | str | None = self._client.get(key)
        if raw is None:
            lock = f"{self._prefix}:robots-lock:{origin}"
            lock_ttl = int(self._settings.fetch_timeout) + 5
            if self._client.set(lock, "1", nx=True, ex=lock_ttl):
                try:
                    return self._fetch(origin, key)
                finally:
                    self._client.delete(lock)
            raw = self._await_other_worker(key, self._settings.fetch_timeout + 1)
            if raw is None:
                return self._fetch(origin, key)
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return _rules_of(value)

    def _await_other_worker(self, key: str, timeout: float) -> bytes | str | None:
        """What another worker fetching this robots.txt cached, or None if it never did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            raw: bytes | str | None = self._client.get(key)
            if raw is not None:
                return raw
        return None

    def _fetch(self, origin: str, key: str) -> _Rules:
        url = f"{origin}/robots.txt"
        result = self._fetcher.fetch(url, kind="robots")
        value, ttl = _verdict(result)
        self._client.set(key, value, ex=ttl)
        rules = _rules_of(value)
        delay = rules.crawl_delay(self.agent)
        host = urlsplit(origin).netloc
        record_crawl_delay(self._client, self._prefix, host, delay, FILE_TTL)
        log.info("robots.txt %s: %s (cached %ds, crawl-delay %s)", url, value[:1], ttl, delay)
        return rules


def _verdict(result: FetchResult) -> tuple[str, int]:
    """(cached value, seconds to keep it) for a robots.txt fetch result."""
    if result.ok and result.status == 200:
        body = (result.body or b"")[:MAX_ROBOTS_BYTES]
        return _FILE + body.decode("utf-8", "replace"), FILE_TTL
    unavailable = result.reason in (errors.TIMEOUT, errors.CONNECTION_ERROR) or (
        result.status is not None and (result.status == 429 or result.status >= 500)
    )
    if unavailable:
        return _DISALLOW_ALL, FAILURE_TTL
    # 4xx, no usable file (wrong type, too large), or a site we may not reach anyway
    return _ALLOW_ALL, FILE_TTL


def _rules_of(value: str) -> _Rules:
    kind = value[:1]
    if kind == _FILE:
        return _Rules(_FILE, _parse(value[1:]))
    return _Rules(_DISALLOW_ALL if kind == _DISALLOW_ALL else _ALLOW_ALL)


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
