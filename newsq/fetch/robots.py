"""robots.txt: fetched once per site for all workers, cached in Redis, honoured.

Per RFC 9309: a 2xx file is parsed (by protego: the longest matching rule wins, ``*``
and ``$`` are wildcards; a group applies when its product token is ours, whole, in any
case) and obeyed; a 4xx (no file) means everything is allowed; a 5xx, a 429 or an
unreachable server means "disallow for now": no verdict yet, so the URL is retried like
a failed fetch (:class:`Verdict` carries the robots.txt fetch's result) and ends
``failed`` with that fetch's reason after its last retry. Cached verdicts expire (a day
for files and 4xx, ``FAILURE_TTL`` for failures, and a retry waits longer than that, so
it asks again). The product token matched is that of the User-Agent sent to the site
(its ``user_agent`` in ``NEWSQ_SITES_FILE``, else ``NEWSQ_USER_AGENT``). A
``Crawl-delay`` for our user agent, at most
:data:`~newsq.fetch.politeness.MAX_CRAWL_DELAY`, is handed to
:mod:`newsq.fetch.politeness`, which then spaces that host's requests that far apart.

Each process keeps parsed files for a few minutes so a busy host is not re-parsed per URL.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from protego import Protego

from newsq import errors
from newsq.config.settings import Settings
from newsq.fetch.client import Fetcher
from newsq.fetch.politeness import MAX_CRAWL_DELAY, record_crawl_delay
from newsq.records import FetchResult

log = logging.getLogger(__name__)

FILE_TTL = 86400
FAILURE_TTL = 10.0  # few enough robots.txt requests to a host that is down
LOCAL_TTL = 300.0
MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB
_ALLOW_ALL = "A"
_UNREACHABLE = "U"  # then "reason status retry-after" of the failed fetch
_FILE = "F"


@dataclass(frozen=True)
class Verdict:
    """robots.txt's answer for one URL: allowed, disallowed, or not known yet.

    Not known yet (robots.txt unreachable): ``failure`` is that fetch's result, with a
    ``retry_after`` past the failure's expiry; the caller retries it like a failed fetch
    of the URL, and ends the URL with its reason after the last retry.
    """

    allowed: bool
    failure: FetchResult | None = None

    @property
    def reason(self) -> str | None:
        """None when allowed; else the reason code the URL would end with."""
        if self.failure is not None:
            return self.failure.reason
        return None if self.allowed else errors.ROBOTS_DISALLOWED

    @property
    def detail(self) -> str | None:
        """What robots.txt said, for a URL it does not allow now (None when it does)."""
        failure = self.failure
        if failure is not None:
            return f"robots.txt {f'HTTP {failure.status}' if failure.status else failure.reason}"
        return None if self.allowed else "robots.txt disallows it"


ALLOWED = Verdict(True)


@dataclass(frozen=True)
class _Rules:
    kind: str
    parser: Protego | None = None
    failure: FetchResult | None = None

    def verdict(self, agent: str, url: str) -> Verdict:
        if self.kind == _UNREACHABLE:
            return Verdict(False, self.failure)
        if self.parser is None:
            return ALLOWED
        return Verdict(self.parser.can_fetch(url, agent))

    def crawl_delay(self, agent: str) -> float | None:
        delay = None if self.parser is None else self.parser.crawl_delay(agent)
        return None if delay is None else min(delay, MAX_CRAWL_DELAY)


def _parse(text: str, agent: str) -> Protego:
    parser = Protego.parse(text)
    # protego applies a group whose token starts a word of our agent ("news" to "newsq");
    # RFC 9309 matches the product token whole, so every other group is dropped. The
    # groups are protego's private table (tests/test_robots.py checks it still works).
    groups = parser._user_agents
    for token in list(groups):
        if token not in ("*", agent.lower()):
            del groups[token]
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
        self._local: dict[str, tuple[float, _Rules]] = {}
        self._lock = threading.Lock()

    def check(self, url: str) -> Verdict:
        """What robots.txt says of ``url``; allowed for a URL with no site (the fetch
        itself reports ``invalid_url``). Redis errors propagate."""
        origin = _origin(url)
        if origin is None:
            return ALLOWED
        verdict = self._rules(origin).verdict(self.agent(origin), url)
        if not verdict.allowed:
            log.info("%s: %s", url, verdict.detail)
        return verdict

    def cached(self, url: str) -> bool:
        """True when :meth:`check` of ``url`` needs no request: its site's robots.txt is
        known here or in Redis (or the URL has no site). A False asks the caller to take
        the host's politeness slot first, as a page fetch does."""
        origin = _origin(url)
        if origin is None:
            return True
        with self._lock:
            local = self._local.get(origin)
        if local and local[0] > time.monotonic():
            return True
        return bool(self._client.exists(f"{self._prefix}:robots:{origin}"))

    def allowed(self, url: str) -> bool:
        """True when robots.txt lets us fetch ``url`` now (see :meth:`check`)."""
        return self.check(url).allowed

    def crawl_delay(self, url: str) -> float | None:
        """The Crawl-delay our agent gets on ``url``'s site (capped), or None."""
        origin = _origin(url)
        return None if origin is None else self._rules(origin).crawl_delay(self.agent(origin))

    def agent(self, origin: str) -> str:
        """The product token robots.txt groups are matched on at ``origin``."""
        return agent_token(self._fetcher.user_agent(origin))

    # -- internals -------------------------------------------------------------------

    def _rules(self, origin: str) -> _Rules:
        now = time.monotonic()
        with self._lock:
            cached = self._local.get(origin)
        if cached and cached[0] > now:
            return cached[1]
        rules = self._shared(origin)
        if rules.kind == _UNREACHABLE:  # kept in Redis only: a retry must see it expire
            return rules
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
        return _rules_of(value, self.agent(origin), f"{origin}/robots.txt")

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
        self._client.set(key, value, px=max(1, int(ttl * 1000)))
        agent = self.agent(origin)
        rules = _rules_of(value, agent, url)
        delay = rules.crawl_delay(agent)
        if rules.kind != _UNREACHABLE:  # an outage keeps the delay the last file set
            host = urlsplit(origin).netloc
            record_crawl_delay(self._client, self._prefix, host, delay, FILE_TTL)
        log.info("robots.txt %s: %s (cached %gs, crawl-delay %s)", url, value[:1], ttl, delay)
        return rules


def check_once(fetcher: Fetcher, settings: Settings, url: str) -> Verdict:
    """What robots.txt says of ``url``, fetched now and kept nowhere (``newsq fetch``)."""
    origin = _origin(url)
    if origin is None:
        return ALLOWED
    robots_url = f"{origin}/robots.txt"
    value, _ = _verdict(fetcher.fetch(robots_url, kind="robots"))
    agent = agent_token(fetcher.user_agent(url))
    return _rules_of(value, agent, robots_url).verdict(agent, url)


def refusal(url: str, verdict: Verdict) -> FetchResult | None:
    """The fetch result of a URL robots.txt does not allow now (``newsq fetch``), its
    page never requested; None when it is allowed."""
    if verdict.allowed:
        return None
    return FetchResult(
        url=url,
        final_url=url,
        ok=False,
        status=None,
        reason=verdict.reason,
        content_type=None,
        bytes=0,
        elapsed_ms=verdict.failure.elapsed_ms if verdict.failure else 0,
        redirects=0,
    )


def _verdict(result: FetchResult) -> tuple[str, float]:
    """(cached value, seconds to keep it) for a robots.txt fetch result."""
    if result.ok and result.status == 200:
        body = (result.body or b"")[:MAX_ROBOTS_BYTES]
        return _FILE + body.decode("utf-8", "replace"), FILE_TTL
    if result.retryable:  # timeout, lost connection, 429 or 5xx: disallow for now
        after = "" if result.retry_after is None else f"{result.retry_after:.3f}"
        return f"{_UNREACHABLE}{result.reason} {result.status or ''} {after}", FAILURE_TTL
    # 4xx, no usable file (wrong type, too large), or a site we may not reach anyway
    return _ALLOW_ALL, FILE_TTL


def _rules_of(value: str, agent: str, robots_url: str) -> _Rules:
    kind = value[:1]
    if kind == _FILE:
        return _Rules(_FILE, _parse(value[1:], agent))
    if kind == _UNREACHABLE:
        return _Rules(_UNREACHABLE, failure=_failure_of(value[1:], robots_url))
    return _Rules(_ALLOW_ALL)


def _failure_of(value: str, robots_url: str) -> FetchResult:
    """The robots.txt fetch failure a cached "reason status retry-after" stands for; its
    ``retry_after`` is at least ``FAILURE_TTL``, so a retry finds the entry expired."""
    reason, status, after = [*value.split(" "), "", ""][:3]
    try:
        asked = float(after)
    except ValueError:
        asked = 0.0
    return FetchResult(
        url=robots_url,
        final_url=robots_url,
        ok=False,
        status=int(status) if status.isascii() and status.isdigit() else None,
        reason=reason if reason in errors.REASONS else errors.CONNECTION_ERROR,
        content_type=None,
        bytes=0,
        elapsed_ms=0,
        redirects=0,
        retry_after=max(FAILURE_TTL, asked) if math.isfinite(asked) else FAILURE_TTL,
    )


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
