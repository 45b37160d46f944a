"""Per-host politeness shared by every worker: a rate limit and a concurrency cap.

The decision is one Lua script (``grant.lua``, run by ``politeness.lua`` and by the
frontier's ``frontier.lua``) on Redis' own clock, so every
worker process on every machine sees the same bucket and clock skew between machines
does not matter. Per host:

- a token bucket of burst 1 at ``settings.host_rate`` requests/s (0 = no limit),
  overridden by the site's ``rate`` in ``NEWSQ_SITES_FILE``, over that by
  ``settings.host_rates`` (``NEWSQ_HOST_RATES``: the deployment's word over the file's),
  over that at run time by :meth:`Politeness.set_rate`, and slowed further by a
  robots.txt Crawl-delay (:func:`record_crawl_delay`), of at most ``MAX_CRAWL_DELAY``
  seconds;
- at most ``settings.host_concurrency`` fetches at once (the site's ``concurrency`` in
  the sites file instead), held as leases that expire, so a worker that dies mid-fetch
  frees its slot after ``lease_ttl`` seconds.

The caller asks :meth:`Politeness.acquire`; 0 means go (and call :meth:`release`
afterwards), anything else is the number of seconds to come back after. The fetch
stage asks through the frontier instead (``newsq.fetch.frontier``): a URL that must
wait waits in its host's queue, not as a task that asks again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from importlib import resources

import redis

from newsq.config.settings import Settings
from newsq.sites import sites_of

log = logging.getLogger(__name__)

_FILES = resources.files("newsq.fetch")
_SCRIPT = (_FILES / "grant.lua").read_text() + (_FILES / "politeness.lua").read_text()

MAX_CRAWL_DELAY = 60.0
"""The longest Crawl-delay honoured: a site asking for more gets one request a minute,
so a delay of years cannot hold its URLs back for ever."""


def fetch_tag(key_prefix: str) -> str:
    """The hash tag of every politeness and frontier key: a dispatch reads the
    politeness of each host it takes, so on Redis Cluster they share one slot."""
    return f"{{{key_prefix}:fetch}}"


def leases_key(tag: str, host: str) -> str:
    """The sorted set of ``host``'s request leases (under the fetch tag ``tag``)."""
    return f"{tag}:polite:leases:{host}"


def next_key(tag: str, host: str) -> str:
    """The key of ``host``'s next allowed request time (under the fetch tag ``tag``)."""
    return f"{tag}:polite:next:{host}"


def _keys(tag: str, host: str) -> list[str]:
    return [
        next_key(tag, host),
        leases_key(tag, host),
        f"{tag}:polite:rates",
        f"{tag}:polite:crawl-delay:{host}",
    ]


def crawl_delay_key(key_prefix: str, host: str) -> str:
    """The Redis key holding ``host``'s Crawl-delay in seconds."""
    return f"{fetch_tag(key_prefix)}:polite:crawl-delay:{host}"


def record_crawl_delay(
    client: redis.Redis, key_prefix: str, host: str, seconds: float | None, ttl: int
) -> None:
    """Make ``host``'s interval at least ``seconds``, at most ``MAX_CRAWL_DELAY``, for
    ``ttl`` seconds (None clears it)."""
    key = crawl_delay_key(key_prefix, host)
    if seconds is None or not seconds > 0:  # NaN too
        client.delete(key)
    else:
        client.set(key, f"{min(seconds, MAX_CRAWL_DELAY):.6f}", ex=max(1, ttl))


class Politeness:
    """Per-host rate and concurrency limits, shared through Redis. Thread-safe."""

    def __init__(
        self, client: redis.Redis, settings: Settings, *, lease_ttl: float | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self.prefix = fetch_tag(settings.key_prefix)  # what the frontier's keys begin with
        self._script = client.register_script(_SCRIPT)
        self._rates = dict(settings.host_rates)
        self._sites = sites_of(settings.sites_file)
        # Long enough for any fetch (which ends by fetch_timeout), short enough that a
        # crashed worker's slot comes back soon.
        self.lease_ttl = lease_ttl if lease_ttl is not None else settings.fetch_timeout * 2 + 5
        self._leases: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()

    def rate_for(self, host: str) -> float:
        """The configured rate of ``host``: ``NEWSQ_HOST_RATES`` (``host:port`` or bare
        host name entries), else its site's ``rate``, else ``NEWSQ_HOST_RATE``."""
        host = host.lower()
        if host in self._rates:
            return self._rates[host]
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name in self._rates:
            return self._rates[name]
        site = self._sites.for_host(host)
        return site.rate if site and site.rate is not None else self._settings.host_rate

    def concurrency_for(self, host: str) -> int:
        """The cap of ``host``'s fetches at once: its site's ``concurrency``, else
        ``NEWSQ_HOST_CONCURRENCY``."""
        site = self._sites.for_host(host)
        return site.concurrency if site and site.concurrency else self._settings.host_concurrency

    def acquire(self, host: str) -> float:
        """0.0 when a fetch of ``host`` may start now (then :meth:`release` after it),
        else the seconds to wait before asking again. Redis errors propagate."""
        host = host.lower()
        lease = uuid.uuid4().hex
        granted, wait = self._script(
            keys=_keys(self.prefix, host),
            args=[
                host,
                self.rate_for(host),
                self.concurrency_for(host),
                lease,
                self.lease_ttl,
            ],
        )
        if int(granted):
            with self._lock:
                self._leases[host].append(lease)
            return 0.0
        delay = max(float(wait), 0.001)
        log.debug("host %s throttled for %.3fs", host, delay)
        return delay

    def release(self, host: str) -> None:
        """Give back one slot this process holds for ``host``; no-op when it holds none."""
        host = host.lower()
        with self._lock:
            held = self._leases.get(host)
            lease = held.pop() if held else None
            if held == []:
                del self._leases[host]
        if lease is not None:
            self._client.zrem(leases_key(self.prefix, host), lease)

    def wait(self, host: str, timeout: float) -> bool:
        """Block until a slot for ``host`` is granted (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while (delay := self.acquire(host)) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
        return True

    def set_rate(self, host: str, rate: float | None) -> None:
        """Override ``host``'s rate for every worker (None removes the override)."""
        key = f"{self.prefix}:polite:rates"
        if rate is None:
            self._client.hdel(key, host.lower())
        else:
            self._client.hset(key, host.lower(), f"{rate:g}")

    def set_crawl_delay(self, host: str, seconds: float | None, ttl: int = 86400) -> None:
        """Raise ``host``'s interval to ``seconds`` for ``ttl`` seconds (robots Crawl-delay)."""
        record_crawl_delay(self._client, self._settings.key_prefix, host.lower(), seconds, ttl)
