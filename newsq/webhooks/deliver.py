"""Webhook delivery: the store's events POSTed one at a time, in event id order (or
``concurrency`` stories at once, each story's events still one after another in order).

One deliverer per deployment sends (it holds a Redis lease, :mod:`.lease`); every
worker runs one, and those not holding the lease wait to take it over. The holder reads
the events after its target's cursor (:mod:`newsq.store.cursors`), POSTs each, signed,
and moves the cursor once the target answered 2xx; a failure (not 2xx, a timeout, a
refused connection) is retried, the same event, with exponential backoff and jitter up
to ``backoff_max``, for as long as it takes: at least once, in order (so in order per
story), and a target down for an hour gets everything once it is back.

Three threads per deliverer: the keeper takes and renews the lease every third of its
ttl (a POST that hangs does not lose it), the sender sends while the lease is held, and
the recorder writes the cursor to the store every ``FLUSH`` seconds when it moved (one
write per 50 ms, not per event: a deliverer killed sends again at most what it
delivered in its last 50 ms).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
import sqlalchemy as sa

from newsq.config.settings import Settings
from newsq.errors import ConfigError, StoreUnavailable
from newsq.fetch.client import PinnedTransport
from newsq.fetch.netguard import BlockedAddress, GuardedBackend, Refused, check_address, prepare
from newsq.store import cursors
from newsq.store.database import Store
from newsq.store.events import read
from newsq.webhooks.config import (
    EVENT_ID_HEADER,
    EVENT_KIND_HEADER,
    SIGNATURE_HEADER,
    WebhookConfig,
)
from newsq.webhooks.lease import Lease

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
"""Seconds before the first retry of a failed POST; doubled each time, to the cap."""
POLL = 0.25
"""Seconds between looks for new events when all are delivered (one indexed query)."""
BATCH = 200
FLUSH = 0.05
"""Seconds between writes of a cursor that moved."""


def sign(body: bytes, secret: str) -> str:
    """The signature header's value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(event: dict[str, Any]) -> bytes:
    """An event as its POST's body: the JSON ``newsq events`` prints, without the newline."""
    return json.dumps(event, ensure_ascii=False).encode()


def retry_delay(attempt: int, cap: float) -> float:
    """Seconds before retry ``attempt`` (0-based): doubling from ``BACKOFF_BASE`` to
    ``cap``, then a random half of it taken off, so retrying workers do not march."""
    ceiling = min(cap, BACKOFF_BASE * 2 ** min(attempt, 32))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def check_target(config: WebhookConfig) -> None:
    """Refuse a target the fetcher's SSRF rules refuse (a loopback, private, link-local
    ... address, or a host name that resolves to one) unless ``NEWSQ_WEBHOOK_ALLOW``
    allows it: a ConfigError of one line. A host that does not resolve now passes:
    every connection resolves and checks it again."""
    hint = "; allow it with NEWSQ_WEBHOOK_ALLOW"
    try:
        url = prepare(config.url, config.allow)
    except Refused as exc:
        raise ConfigError(f"NEWSQ_WEBHOOK_URL: {config.target}: {exc}{hint}") from None
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return
    import ipaddress

    for info in infos:
        try:
            check_address(ipaddress.ip_address(str(info[4][0]).split("%")[0]), port, host,
                          config.allow)  # fmt: skip
        except BlockedAddress as exc:
            raise ConfigError(f"NEWSQ_WEBHOOK_URL: {config.target}: {exc}{hint}") from None


def check(settings: Settings) -> None:
    """:func:`check_target` of the webhook of ``settings``, if it has one."""
    config = WebhookConfig.from_settings(settings)
    if config is not None:
        check_target(config)


class Deliverer:
    """Sends ``config``'s webhook the events of ``store`` while it holds the lease."""

    def __init__(self, config: WebhookConfig, store: Store, client: redis.Redis) -> None:
        self.config = config
        self.store = store
        self.lease = Lease(client, config.lease_key, config.lease)
        self.held = threading.Event()
        self._stop = threading.Event()
        side_by_side = config.concurrency
        self._pool = ThreadPoolExecutor(side_by_side) if side_by_side > 1 else None
        self._backend = GuardedBackend(config.allow, resolver_threads=min(side_by_side, 8))
        limits = httpx.Limits(max_connections=max(side_by_side, 2))
        self._http = httpx.Client(
            transport=PinnedTransport(self._backend, limits),
            timeout=config.timeout,
            follow_redirects=False,  # a redirect is a failure: no hop to elsewhere
            trust_env=False,
            headers={"User-Agent": config.user_agent, "Content-Type": "application/json"},
        )
        self._threads: list[threading.Thread] = []
        self._moved = threading.Lock()
        self._taken = 0
        """The last event id the target took, by this deliverer."""
        self._unrecorded = 0
        """Events taken since the cursor was last written."""
        self._beyond: set[int] = set()
        """Events taken past the first one not taken (``concurrency`` > 1)."""

    def start(self) -> Deliverer:
        threads = (("keeper", self._keep), ("sender", self._send), ("recorder", self._record))
        for name, run in threads:
            thread = threading.Thread(target=run, name=f"newsq-webhook-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop sending: a POST on its way is waited for (up to its timeout), then the
        lease is given up, so another deliverer takes over at once."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.config.timeout + 2)
        self._write_cursor()
        sending = any(t.is_alive() for t in self._threads)
        if not sending:  # else it lapses: no second sender while this POST is out
            try:
                self.lease.release()
            except redis.RedisError as exc:
                log.warning("%s: webhook lease not released: %s", self.config.target, exc)
        self.held.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        self._backend.close()

    # -- the keeper ------------------------------------------------------------------

    def _keep(self) -> None:
        every = self.config.lease / 3
        while not self._stop.is_set():
            try:
                mine = self.lease.acquire()
            except Exception as exc:  # not provably ours (Redis gone, ...): stop sending
                log.warning("%s: webhook lease unknown: %s", self.config.target, exc)
                mine = False
            if mine and not self.held.is_set():
                log.info("%s: this process delivers the webhook now", self.config.target)
            (self.held.set if mine else self.held.clear)()
            self._stop.wait(every)

    # -- the recorder ----------------------------------------------------------------

    def _record(self) -> None:
        while not self._stop.wait(FLUSH):
            self._write_cursor()

    def _write_cursor(self) -> None:
        """Write where the target stands, if it took events since the last write."""
        with self._moved:
            taken, count, self._unrecorded = self._taken, self._unrecorded, 0
        if not count:
            return
        try:
            cursors.advance(self.store, self.config.target, taken, count)
        except Exception as exc:  # the store is unavailable: written on the next turn
            log.warning("%s: webhook cursor not written: %s", self.config.target, exc)
            with self._moved:
                self._unrecorded += count

    # -- the sender ------------------------------------------------------------------

    def _send(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if not self.held.wait(0.1):
                continue
            try:
                attempt = self._send_batch(attempt)
            except (StoreUnavailable, sa.exc.SQLAlchemyError) as exc:
                log.warning("%s: webhook: store unavailable: %s", self.config.target, exc)
                self._stop.wait(retry_delay(attempt, self.config.backoff_max))
                attempt += 1
            except Exception:  # a thread that died would hold the lease and send nothing
                log.exception("%s: webhook: unexpected error; going on", self.config.target)
                self._stop.wait(retry_delay(attempt, self.config.backoff_max))
                attempt += 1

    def _send_batch(self, attempt: int) -> int:
        """POST the events after the cursor, each until it is taken, while the lease is
        held; returns the attempt count of the event being retried (0 when none)."""
        target = self.config.target
        # the store's, unless this deliverer took more that is not written yet; another
        # holder may have moved it past both
        last = max(cursors.load(self.store, target).last_id, self._taken)
        batch = list(read(self.store, last, batch=BATCH))
        if not batch:
            self._stop.wait(POLL)
            return 0
        if self.config.concurrency > 1:
            return self._send_side_by_side(batch, attempt)
        for event in batch:
            while True:
                if self._stop.is_set() or not self.held.is_set():
                    return attempt
                error = self.post(event)
                if error is None:
                    with self._moved:
                        self._taken = event["id"]
                        self._unrecorded += 1
                    attempt = 0
                    break
                log.warning("%s: webhook event %s: %s; retrying", target, event["id"], error)
                cursors.failed(self.store, target, f"event {event['id']}: {error}")
                self._stop.wait(retry_delay(attempt, self.config.backoff_max))
                attempt += 1
        return 0

    def _send_side_by_side(self, batch: list[dict[str, Any]], attempt: int) -> int:
        """``batch``'s stories ``concurrency`` at a time, each story's events one after
        another in id order, each story stopping at its first failure. The cursor moves
        over the events taken up to the first one that was not; those taken after that
        one are remembered (:attr:`_beyond`) and not sent again."""
        taken = {e["id"] for e in batch if e["id"] in self._beyond}
        stories: dict[str, list[dict[str, Any]]] = {}
        for event in batch:
            if event["id"] not in taken:
                stories.setdefault(event["story_id"] or f"#{event['id']}", []).append(event)
        failures: list[tuple[int, str]] = []

        def send(events: list[dict[str, Any]]) -> None:
            for event in events:
                if self._stop.is_set() or not self.held.is_set():
                    return
                error = self.post(event)
                if error is not None:
                    failures.append((event["id"], error))  # list.append: atomic
                    return
                taken.add(event["id"])

        assert self._pool is not None
        list(self._pool.map(send, stories.values()))
        moved = next((n for n, e in enumerate(batch) if e["id"] not in taken), len(batch))
        if moved:
            with self._moved:
                self._taken = batch[moved - 1]["id"]
                self._unrecorded += moved
        self._beyond = {i for i in taken if i > self._taken}
        if moved == len(batch):
            return 0
        if not failures:  # stopped, or the lease was lost
            return attempt
        first, error = min(failures)
        target = self.config.target
        log.warning("%s: webhook event %s: %s; retrying", target, first, error)
        cursors.failed(self.store, target, f"event {first}: {error}")
        self._stop.wait(retry_delay(attempt, self.config.backoff_max))
        return attempt + 1

    def post(self, event: dict[str, Any]) -> str | None:
        """POST one event; None when the target took it (2xx), else why not."""
        body = body_of(event)
        headers = {SIGNATURE_HEADER: sign(body, self.config.secret),
                   EVENT_ID_HEADER: str(event["id"]), EVENT_KIND_HEADER: event["kind"]}  # fmt: skip
        try:
            with self._backend.deadline(time.monotonic() + self.config.timeout):
                answer = self._http.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return f"timeout after {self.config.timeout:g} s"
        except (httpx.HTTPError, Refused, OSError) as exc:
            return f"connection_error: {exc}"
        if 200 <= answer.status_code < 300:
            return None
        return f"http {answer.status_code}"


def drain(config: WebhookConfig, store: Store, client: redis.Redis, wait: float) -> cursors.Cursor:
    """Deliver what is left (as one more deliverer: it takes the lease once the others
    gave it up), for up to ``wait`` seconds; the cursor as it then stands."""
    deliverer = Deliverer(config, store, client).start()
    deadline = time.monotonic() + wait
    try:
        while True:
            cursor = cursors.load(store, config.target)
            left = cursors.pending(store, cursor.last_id)
            if left == 0 or time.monotonic() >= deadline:
                return dataclasses.replace(cursor, pending=left)
            time.sleep(0.05)
    finally:
        deliverer.stop()
