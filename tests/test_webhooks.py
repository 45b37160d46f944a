"""Webhooks: the store's events POSTed, signed, in order, to a real HTTP receiver on
loopback, with real Redis (the lease) and a real SQLite store (events and cursor);
deliverers killed as processes, and ``newsq demo`` end to end."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from newsq.config.settings import AllowPrivate, Settings
from newsq.errors import ConfigError
from newsq.store import cursors
from newsq.store.database import Store
from newsq.store.events import read
from newsq.webhooks import Deliverer, WebhookConfig, check_target, sign
from tests.cli import newsq_env, run_newsq
from tests.receiver import Receiver
from tests.test_events import _row, _save

SECRET = "s3cret-key"
LEASE = 1.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver().start()
    yield got
    got.release.set()
    got.stop()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.from_url(settings.database_url)
    yield opened
    opened.close()


def _config(settings: Settings, url: str, **extra: Any) -> WebhookConfig:
    values: dict[str, Any] = {
        "url": url, "secret": SECRET, "allow": AllowPrivate.parse("127.0.0.1"),
        "timeout": 0.5, "backoff_max": 0.05, "lease": LEASE,
        "key_prefix": settings.key_prefix, **extra,
    }  # fmt: skip
    return WebhookConfig(**values)


def _stored(store: Store, first: int, count: int) -> None:
    """``count`` stories stored, each followed by a copy of it at another outlet."""
    for n in range(first, first + count):
        article = _row(f"http://a.example/{n}", f"s{n}", f"body {n}")
        _save(store, article)
        _save(store, _row(f"http://b.example/{n}", f"s{n}", None, dup=article["url"]))


def _started(settings: Settings, store: Store, url: str, **extra: Any) -> Deliverer:
    client = redis.Redis.from_url(settings.broker_url or "")
    return Deliverer(_config(settings, url, **extra), store, client).start()


def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_each_event_is_posted_once_signed_as_newsq_events_prints_it(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    _stored(store, 1, 2)
    events = list(read(store))
    deliverer = _started(settings, store, receiver.url)
    try:
        assert receiver.wait_for(4) == [e["id"] for e in events]
    finally:
        deliverer.stop()
    for request, event in zip(receiver.requests, events, strict=True):
        # the body is the line `newsq events` prints, signed as it was sent
        assert request.body == json.dumps(event, ensure_ascii=False).encode()
        mac = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Newsq-Signature"] == f"sha256={mac}"
        assert request.headers["X-Newsq-Event-Id"] == str(event["id"])
        assert request.headers["X-Newsq-Event-Kind"] == event["kind"]
        assert request.headers["Content-Type"] == "application/json"
    wrong = hmac.new(b"another key", receiver.requests[0].body, hashlib.sha256).hexdigest()
    assert receiver.requests[0].headers["X-Newsq-Signature"] != f"sha256={wrong}"
    cursor = cursors.load(store, deliverer.config.target)
    assert (cursor.last_id, cursor.delivered) == (events[-1]["id"], 4)
    assert deliverer.config.target == f"http://127.0.0.1:{receiver.port}/hook"


def test_a_failing_receiver_gets_everything_in_order_once_it_recovers(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    """5xx, a timeout, then refused connections: the same event again, with backoff,
    until it is taken; none lost, none taken twice, never one before its turn."""
    receiver.hang = 1.0  # over the 0.5 s timeout
    receiver.answers = [500, 503, "hang"]
    _stored(store, 1, 3)
    deliverer = _started(settings, store, receiver.url)
    try:
        _until(lambda: len(receiver.seen()) == 3)
        receiver.stop()  # down: connection refused
        _stored(store, 4, 2)  # stored while it is down
        target = deliverer.config.target
        _until(lambda: "connection_error" in (cursors.load(store, target).last_error or ""))
        assert receiver.taken() == [] and cursors.load(store, target).last_id == 0
        receiver.start()  # back, on the same port
        ids = [e["id"] for e in read(store)]
        assert receiver.wait_for(len(ids)) == ids
    finally:
        deliverer.stop()
    seen = receiver.seen()
    assert seen == sorted(seen)  # each event retried in its place, none overtaken
    assert seen[:3] == [ids[0]] * 3
    cursor = cursors.load(store, target)
    assert cursor.last_id == ids[-1] and cursor.delivered == len(ids)
    assert cursors.pending(store, cursor.last_id) == 0
    assert cursor.last_error is not None and "connection_error" in cursor.last_error


DELIVERER = """
import sys, time
import redis
from newsq.config.settings import AllowPrivate
from newsq.store.database import Store
from newsq.webhooks import Deliverer, WebhookConfig

url, db, broker, prefix, lease = sys.argv[1:6]
config = WebhookConfig(url=url, secret="s3cret-key", allow=AllowPrivate.parse("127.0.0.1"),
                       timeout=30, backoff_max=0.05, lease=float(lease), key_prefix=prefix)
Deliverer(config, Store.from_url(db), redis.Redis.from_url(broker)).start()
time.sleep(600)
"""


def _deliverer_process(settings: Settings, url: str) -> subprocess.Popen[bytes]:
    args = [url, settings.database_url, settings.broker_url or "", settings.key_prefix, str(LEASE)]
    return subprocess.Popen([sys.executable, "-c", DELIVERER, *args], env=newsq_env(),
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _holder(settings: Settings) -> str:
    client = redis.Redis.from_url(settings.broker_url or "")
    try:
        value = client.get(f"{settings.key_prefix}:webhook:lease")
    finally:
        client.close()
    return value.decode() if value else ""


def _held_by(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:"


def test_a_deliverer_killed_mid_batch_resumes_from_its_cursor(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    """Killed with the third event's POST out: events 1 and 2 were taken and stay
    taken; the next deliverer (another process) starts at the third."""
    _stored(store, 1, 3)
    ids = [e["id"] for e in read(store)]
    receiver.answers = [200, 200, "hold"]
    target = _config(settings, receiver.url).target
    proc = _deliverer_process(settings, receiver.url)
    try:
        assert receiver.holding.wait(30)
        # the cursor is written within 50 ms of a 2xx, and only then
        _until(lambda: cursors.load(store, target).last_id == ids[1], timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    receiver.release.set()
    assert cursors.load(store, target).last_id == ids[1]  # the third was never taken
    deliverer = _started(settings, store, receiver.url)
    try:
        assert receiver.wait_for(len(ids)) == ids  # its answer to the dead one was lost
    finally:
        deliverer.stop()
    # the held one came twice (at least once: the receiver dedups on the id), no other
    assert receiver.seen() == [*ids[:3], *ids[2:]]
    assert cursors.load(store, target).last_id == ids[-1]


def test_one_deliverer_sends_and_another_process_takes_over_when_it_dies(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    proc = _deliverer_process(settings, receiver.url)
    standby = None
    try:
        _until(lambda: _holder(settings).startswith(_held_by(proc.pid)))
        standby = _started(settings, store, receiver.url)
        _stored(store, 1, 2)
        receiver.wait_for(4)
        assert not standby.held.is_set()  # the holder sent them; the standby waited
        assert _holder(settings).startswith(_held_by(proc.pid))
        target = standby.config.target  # killed once it wrote its cursor: none sent twice
        _until(lambda: cursors.load(store, target).last_id == receiver.taken()[-1], timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        _until(standby.held.is_set, timeout=10)
        took_over = time.monotonic() - killed
        assert took_over < LEASE + LEASE / 3 + 1.0  # the lease's ttl, and a keeper's turn
        _stored(store, 3, 1)
        ids = [e["id"] for e in read(store)]
        assert receiver.wait_for(len(ids)) == ids
        assert _holder(settings) == standby.lease.token
    finally:
        proc.kill()
        if standby is not None:
            standby.stop()
    assert receiver.seen() == ids  # nothing sent twice, by either
    assert _holder(settings) == ""  # stopped: given up, for the next to take at once


def test_two_deliverers_in_one_process_take_turns_not_send_twice(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    first = _started(settings, store, receiver.url)
    _until(first.held.is_set)
    second = _started(settings, store, receiver.url)
    _stored(store, 1, 2)
    receiver.wait_for(4)
    assert not second.held.is_set()
    first.stop()  # it gives the lease up: the other takes it on its keeper's next turn
    _until(second.held.is_set, timeout=LEASE)
    _stored(store, 3, 1)
    ids = [e["id"] for e in read(store)]
    try:
        assert receiver.wait_for(len(ids)) == ids
    finally:
        second.stop()
    assert receiver.seen() == ids


def test_a_private_target_is_refused_unless_allowed(
    settings: Settings, store: Store, receiver: Receiver, redis_url: str, sqlite_url: str
) -> None:
    for url in (receiver.url, f"http://localhost:{receiver.port}/hook", "http://10.1.2.3/h"):
        with pytest.raises(ConfigError, match=r"is not a public address; allow it with "
                           r"NEWSQ_WEBHOOK_ALLOW$"):  # fmt: skip
            check_target(_config(settings, url, allow=AllowPrivate()))
    check_target(_config(settings, receiver.url))  # allow-listed: 127.0.0.1
    check_target(_config(settings, f"http://localhost:{receiver.port}/hook",
                         allow=AllowPrivate.parse(f"localhost:{receiver.port}")))  # fmt: skip

    # a name that passed at start and points at loopback now: each connection checks it
    _stored(store, 1, 1)
    blocked = _started(settings, store, f"http://localhost:{receiver.port}/hook",
                       allow=AllowPrivate())  # fmt: skip
    target = blocked.config.target
    try:
        _until(lambda: "not a public address" in (cursors.load(store, target).last_error or ""))
    finally:
        blocked.stop()
    assert receiver.seen() == [] and cursors.load(store, target).last_id == 0

    env = newsq_env(NEWSQ_BROKER_URL=redis_url, NEWSQ_DATABASE_URL=sqlite_url,
                    NEWSQ_WEBHOOK_URL=receiver.url, NEWSQ_WEBHOOK_SECRET=SECRET)  # fmt: skip
    for args in (["worker"], ["run", "http://example.invalid/a"]):
        done = run_newsq(*args, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            f"newsq: NEWSQ_WEBHOOK_URL: {receiver.url}: 127.0.0.1 -> 127.0.0.1 is not a "
            "public address; allow it with NEWSQ_WEBHOOK_ALLOW"
        ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEWSQ_WEBHOOK_URL": "http://hooks.example/in"},
         "NEWSQ_WEBHOOK_SECRET: not set, and NEWSQ_WEBHOOK_URL is: it signs every webhook POST"),
        ({"NEWSQ_WEBHOOK_URL": "ftp://hooks.example/in", "NEWSQ_WEBHOOK_SECRET": "k"},
         "NEWSQ_WEBHOOK_URL: 'ftp://hooks.example/in' is not an http:// or https:// URL"),
        ({"NEWSQ_WEBHOOK_URL": "http://hooks.example:0/in", "NEWSQ_WEBHOOK_SECRET": "k"},
         "NEWSQ_WEBHOOK_URL: 'http://hooks.example:0/in': the port must be 1 to 65535"),
        ({"NEWSQ_WEBHOOK_URL": "http:///in", "NEWSQ_WEBHOOK_SECRET": "k"},
         "NEWSQ_WEBHOOK_URL: 'http:///in' has no host"),
        ({"NEWSQ_WEBHOOK_ALLOW": "hooks:web"},
         "NEWSQ_WEBHOOK_ALLOW: 'hooks:web' is not a host, host:port or CIDR network"),
        ({"NEWSQ_WEBHOOK_SECRET": "s3cret\x07"},  # the secret is not shown
         "NEWSQ_WEBHOOK_SECRET: its value holds a control character or bytes that are not UTF-8"),
    ],
)  # fmt: skip
def test_webhook_settings_are_checked_at_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == message


def test_a_secret_may_be_any_text_and_keys_the_signature_as_utf8() -> None:
    settings = Settings.from_env({"NEWSQ_WEBHOOK_URL": "https://hooks.example/in",
                                  "NEWSQ_WEBHOOK_SECRET": " caf\u00e9 "})  # fmt: skip
    assert settings.webhook_secret == "caf\u00e9"
    mac = hmac.new("caf\u00e9".encode(), b"{}", hashlib.sha256).hexdigest()
    assert sign(b"{}", "caf\u00e9") == f"sha256={mac}"


# -- the "done when": newsq demo, its events followed and its webhook -------------


def _follow(env: dict[str, str], into: list[dict[str, Any]]) -> subprocess.Popen[str]:
    follower = subprocess.Popen(
        [sys.executable, "-m", "newsq", "events", "--follow", "--interval", "0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def run() -> None:
        assert follower.stdout is not None
        into.extend(json.loads(line) for line in follower.stdout)

    threading.Thread(target=run, daemon=True).start()
    return follower


@pytest.mark.slow
def test_newsq_events_and_the_webhook_see_every_story_of_a_demo_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    database = tmp_path / "demo.db"
    env = newsq_env(NEWSQ_DATABASE_URL=f"sqlite:///{database}", NEWSQ_WEBHOOK_URL=receiver.url,
                    NEWSQ_WEBHOOK_SECRET=SECRET, NEWSQ_WEBHOOK_ALLOW="127.0.0.1")  # fmt: skip
    receiver.answers = [503]  # one failure on the way: retried in its place
    followed: list[dict[str, Any]] = []
    follower = _follow(env, followed)
    try:
        done = run_newsq("demo", "--workers", "2", env=env, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "webhook" not in done.stderr  # all delivered before it exited
        store = Store.from_url(f"sqlite:///{database}", create=False)
        stored = list(read(store))
        store.close()
        _until(lambda: len(followed) >= len(stored))
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(30) == 0
    finally:
        follower.kill()
    ids = [e["id"] for e in stored]
    assert len(ids) > 24  # the demo's 24 stories and their copies
    assert [e["id"] for e in followed] == ids  # each once, in order
    assert receiver.taken() == ids  # taken before `newsq demo` returned, each once
    assert [r.event for r in receiver.requests if r.status == 200] == followed == stored
    stories = {e["story_id"] for e in stored}
    assert len(stories) == 24 and {e["story_id"] for e in followed} == stories


def test_newsq_stats_shows_what_the_webhook_took_and_its_last_error(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    receiver.answers = [503]
    _stored(store, 1, 2)
    deliverer = _started(settings, store, receiver.url)
    try:
        receiver.wait_for(4)
    finally:
        deliverer.stop()
    _stored(store, 3, 1)  # stored after it stopped: pending
    env = newsq_env(NEWSQ_BROKER_URL=settings.broker_url or "", COLUMNS="200",
                    NEWSQ_DATABASE_URL=settings.database_url,
                    NEWSQ_KEY_PREFIX=settings.key_prefix)  # fmt: skip
    done = run_newsq("stats", "--once", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if receiver.url in line)
    assert "4 / 2; last error " in row and ": event 1: http 503" in row


@pytest.mark.slow
def test_newsq_run_says_what_it_could_not_deliver_and_the_next_run_sends_it(
    redis_url: str, key_prefix: str, sqlite_url: str, receiver: Receiver
) -> None:
    from tests.cli import local_env
    from tests.faults.site import Site, serve

    env = local_env(redis_url, key_prefix, sqlite_url, NEWSQ_WEBHOOK_URL=receiver.url,
                    NEWSQ_WEBHOOK_SECRET=SECRET, NEWSQ_WEBHOOK_ALLOW="127.0.0.1",
                    NEWSQ_WEBHOOK_DRAIN="1", NEWSQ_WEBHOOK_BACKOFF_MAX="0.1")  # fmt: skip
    receiver.answers = [500] * 10_000  # down for the whole first run
    site = Site(stories=3, copies=1).build()
    with serve(site):
        first = run_newsq("run", *site.urls, "--workers", "1", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stderr.splitlines()[-1] == (
            f"newsq: webhook {receiver.url}: 4 events not delivered after 1 s (last error: "
            "event 1: http 500); the next run sends them"
        )
        assert receiver.taken() == []
        receiver.answers = []  # back
        again = run_newsq("run", *site.urls, "--workers", "1", env=env)  # nothing new
    assert again.returncode == 0 and "webhook" not in again.stderr, again.stderr
    store = Store.from_url(sqlite_url, create=False)
    ids = [e["id"] for e in read(store)]
    store.close()
    assert len(ids) == 4 and receiver.taken() == ids


def test_the_cursor_is_kept_on_sqlite_and_postgresql(
    database_url: str, redis_url: str, key_prefix: str, receiver: Receiver
) -> None:
    store = Store.from_url(database_url)
    settings = Settings(broker_url=redis_url, database_url=database_url, key_prefix=key_prefix)
    try:
        _stored(store, 1, 2)
        receiver.answers = [502]
        deliverer = _started(settings, store, receiver.url)
        try:
            ids = [e["id"] for e in read(store)]
            assert receiver.wait_for(len(ids)) == ids
        finally:
            deliverer.stop()
        [cursor] = cursors.every(store)
        assert (cursor.last_id, cursor.delivered, cursor.pending) == (ids[-1], len(ids), 0)
        assert cursor.last_error == f"event {ids[0]}: http 502"
        _stored(store, 3, 1)
        assert cursors.every(store)[0].pending == 2
    finally:
        store.close()


def test_with_redis_gone_the_deliverer_stops_sending_and_goes_on_when_it_is_back(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    """The lease cannot be proven without Redis: no sending (another worker may hold
    it once Redis is back), then the same deliverer takes it again and goes on."""
    from newsq.workers.redis_server import RedisServer

    own = RedisServer().start()
    client = redis.Redis.from_url(own.url, socket_timeout=1)
    config = _config(settings, receiver.url)
    deliverer = Deliverer(config, store, client).start()
    try:
        _stored(store, 1, 1)
        receiver.wait_for(2)
        own.stop(keep_dir=True)
        _until(lambda: not deliverer.held.is_set(), timeout=10)
        _stored(store, 2, 1)
        time.sleep(LEASE)
        assert len(receiver.seen()) == 2  # nothing sent while the lease was unknown
        own = RedisServer(port=own.port, dir=own.dir).start()
        ids = [e["id"] for e in read(store)]
        assert receiver.wait_for(len(ids)) == ids
    finally:
        deliverer.stop()
        client.close()
        own.stop()
    assert receiver.seen() == ids


def test_stories_side_by_side_keep_each_storys_events_in_order(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    """``NEWSQ_WEBHOOK_CONCURRENCY=4``: up to four POSTs at once, never two of one
    story, each story's in id order; a failure sends it again with what came after it,
    and every event is taken."""
    receiver.delay = 0.05
    receiver.answers = [200, 200, 500]  # the third to arrive fails once
    _stored(store, 1, 8)  # 8 stories, an article and a copy each
    events = {e["id"]: e for e in read(store)}
    deliverer = _started(settings, store, receiver.url, concurrency=4)
    try:
        _until(lambda: set(receiver.taken()) == set(events))
        target = deliverer.config.target
        _until(lambda: cursors.load(store, target).last_id == max(events), timeout=5)
    finally:
        deliverer.stop()
    assert 1 < receiver.most_in_flight <= 4
    by_story: dict[str, list[int]] = {}
    for request in receiver.requests:
        by_story.setdefault(request.event["story_id"], []).append(request.event["id"])
    for story, ids in by_story.items():
        assert ids == sorted(ids), f"{story}'s events out of order: {ids}"
    failed = next(r.event["id"] for r in receiver.requests if r.status == 500)
    assert receiver.seen().count(failed) == 2  # the failed one, sent again once
    assert cursors.load(store, target).last_error == f"event {failed}: http 500"
