"""The frontier on a real Redis: URLs that wait for their host wait in its queue and come
out in order, at the host's rate, fresh before bulk; one dispatcher per cluster, whose
lease moves on when its holder dies; a URL popped and never sent is not lost."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis

from newsq.config.settings import Settings
from newsq.fetch.frontier import (
    BULK_LANE,
    DISPATCH_AHEAD,
    FRESH_LANE,
    Dispatcher,
    Frontier,
    Grant,
)
from newsq.fetch.politeness import Politeness
from newsq.records import QUEUED, TERMINAL
from newsq.resources import Runtime
from tests.faults.site import Site, serve
from tests.redis_counts import commands_run

ROOT = Path(__file__).resolve().parent.parent


def _frontier(client: redis.Redis, settings: Settings, **changes: object) -> Frontier:
    changed = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    return Frontier(client, Politeness(client, changed))


class Sent:
    """A dispatcher's ``send`` that keeps what was sent, with Redis' time of sending."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.grants: list[tuple[float, Grant]] = []

    def __call__(self, grants: Sequence[Grant]) -> None:
        seconds, micros = self.client.time()
        self.grants += [(seconds + micros / 1e6, g) for g in grants]

    def urls(self) -> list[str]:
        return [g.url for _, g in self.grants]


def _drain(dispatcher: Dispatcher, sent: Sent, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(sent.grants) < count and time.monotonic() < deadline:
        time.sleep(min(dispatcher.step(), 0.05))


def test_parked_urls_come_out_in_order_at_the_hosts_rate(
    redis_client: redis.Redis, settings: Settings
) -> None:
    frontier = _frontier(redis_client, settings, host_rate=10.0, host_concurrency=10)
    urls = [f"https://a.example/{n}" for n in range(6)]
    assert frontier.offer("a.example", urls[0], 0, BULK_LANE) is not None  # free: go
    assert all(frontier.offer("a.example", u, 0, BULK_LANE) is None for u in urls[1:])
    assert frontier.waiting() == {"a.example": 5}
    sent = Sent(redis_client)
    dispatcher = Dispatcher(frontier, sent)
    _drain(dispatcher, sent, 5, timeout=10)
    dispatcher.stop()  # says the last URLs were sent
    assert sent.urls() == urls[1:]
    # sent within a second of their slots (a dispatch gives those of the next second),
    # each fetch then takes its slot: 0.1 s apart, at the rate and not much slower
    starts = []
    for _, g in sent.grants:
        wait = frontier.claim("a.example", g.interval, 2.0)
        seconds, micros = redis_client.time()
        starts.append(seconds + micros / 1e6 + wait)
    assert all(0.095 <= b - a <= 0.105 for a, b in itertools.pairwise(starts)), starts
    assert max(s - t for s, (t, _) in zip(starts, sent.grants, strict=True)) <= 1.0 + 0.15
    assert frontier.waiting() == {}
    assert redis_client.exists(frontier.due_key, frontier.pending_key) == 0


def test_fresh_urls_leave_before_the_bulk_and_hosts_do_not_wait_for_each_other(
    redis_client: redis.Redis, settings: Settings
) -> None:
    frontier = _frontier(redis_client, settings, host_rate=2.0, host_concurrency=10)
    assert frontier.offer("big.example", "https://big.example/0", 0, BULK_LANE)
    backlog = [f"https://big.example/{n}" for n in range(1, 30)]
    for url in backlog:
        assert frontier.offer("big.example", url, 0, BULK_LANE) is None
    assert frontier.offer("big.example", "https://big.example/news", 0, FRESH_LANE) is None
    small = dataclasses.replace(settings, host_rate=20.0, host_concurrency=10)  # type: ignore[arg-type]
    other = Frontier(redis_client, Politeness(redis_client, small))
    assert other.offer("small.example", "https://small.example/0", 0, BULK_LANE)
    for n in range(1, 4):
        assert other.offer("small.example", f"https://small.example/{n}", 0, BULK_LANE) is None
    sent = Sent(redis_client)
    started = time.monotonic()
    _drain(Dispatcher(frontier, sent), sent, 5, timeout=10)
    assert time.monotonic() - started < 1.5  # the small host's 3 URLs at 20/s
    urls = sent.urls()
    assert next(u for u in urls if "big" in u) == "https://big.example/news"  # before the backlog
    assert [u for u in urls if "small" in u] == [f"https://small.example/{n}" for n in (1, 2, 3)]
    assert {g.lane for _, g in sent.grants if g.url.endswith("/news")} == {FRESH_LANE}


def test_dispatched_fetches_that_waited_in_a_queue_make_no_burst(
    redis_client: redis.Redis, settings: Settings
) -> None:
    frontier = _frontier(redis_client, settings, host_rate=10.0, host_concurrency=10)
    assert frontier.offer("a.example", "https://a.example/0", 0, BULK_LANE)
    for n in range(1, 4):
        assert frontier.offer("a.example", f"https://a.example/{n}", 0, BULK_LANE) is None
    sent = Sent(redis_client)
    _drain(Dispatcher(frontier, sent), sent, 3, timeout=5)
    grants = [g for _, g in sent.grants]
    assert {g.interval for g in grants} == {0.1}
    # the three tasks reach their workers together (a queue held them): each waits for
    # the slot its dispatch took, an interval after the one before
    assert all(abs(b.slot - a.slot - 0.1) < 1e-5 for a, b in itertools.pairwise(grants))
    now = frontier.clock()
    assert grants[0].slot - now <= 0.1
    # one that came too late for its slot takes a new one, after every slot given
    assert frontier.claim("a.example", 0.1, 0.1) > 0.1  # too far off: not taken
    late = frontier.claim("a.example", 0.1, 2.0)
    assert grants[-1].slot + 0.1 - 0.01 <= frontier.clock() + late <= grants[-1].slot + 0.2


def test_one_dispatch_gives_a_busy_host_its_next_seconds_slots(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 18: a dispatch gave a host with a rate one URL, so each URL of a backlog
    paid a whole dispatch (~15 commands); it gives those whose slots start within
    DISPATCH_AHEAD, each fetch then waiting for its own slot."""
    frontier = _frontier(redis_client, settings, host_rate=5.0, host_concurrency=10)
    assert frontier.offer("busy.example", "https://busy.example/0", 0, BULK_LANE)
    for n in range(1, 20):
        assert frontier.offer("busy.example", f"https://busy.example/{n}", 0, BULK_LANE) is None
    time.sleep(0.25)  # the host's next slot has come
    holds, _, grants = frontier.dispatch("me", 500, 5.0)
    assert holds
    ahead = int(DISPATCH_AHEAD * 5)
    assert ahead <= len(grants) <= ahead + 1, grants  # the first waits at most an interval
    # each fetch waits for its own slot, an interval after the one before (one clock
    # reading for all: reading it per grant let float noise past a bound of 0.2)
    now = frontier.clock()
    waits = [g.slot - now for g in grants]
    assert all(abs(b - a - 0.2) < 1e-5 for a, b in itertools.pairwise(waits)), waits
    assert waits[0] <= 0.2
    assert waits[-1] <= DISPATCH_AHEAD + 0.2


def test_a_url_popped_and_never_sent_goes_back_first(
    redis_client: redis.Redis, settings: Settings
) -> None:
    frontier = _frontier(redis_client, settings, host_rate=50.0, host_concurrency=10)
    assert frontier.offer("a.example", "https://a.example/0", 0, BULK_LANE)
    for n in (1, 2):
        assert frontier.offer("a.example", f"https://a.example/{n}", 3, BULK_LANE) is None
    time.sleep(0.03)
    holds, _, popped = frontier.dispatch("dead-holder", 10, lease_seconds=0.2)
    assert holds and [g.url for g in popped] == ["https://a.example/1", "https://a.example/2"]
    # the holder dies before sending: no sent(); its lease runs out, another takes over
    time.sleep(0.25)
    sent = Sent(redis_client)
    _drain(Dispatcher(frontier, sent), sent, 2, timeout=5)
    assert sent.urls() == ["https://a.example/1", "https://a.example/2"]
    assert {g.attempt for _, g in sent.grants} == {3}
    leases = redis_client.zrange(f"{frontier.prefix}:polite:leases:a.example", 0, -1)
    assert not {g.lease.encode() for g in popped} & set(leases)  # the lost ones' slots: back


def test_urls_pending_from_a_dispatcher_before_slots_go_back_as_they_were(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """A dispatch's records gained the URL's slot; a pending list a dispatcher of the
    version before left (it died before sending, then the workers were upgraded) was
    read one field off: its URLs went back into the wrong lane, as "attempt|url"."""
    import json

    frontier = _frontier(redis_client, settings, host_rate=50.0, host_concurrency=10)
    old = ["lease:1|old.example|50|10|0.020000|9|2|https://old.example/1?a=1|b",
           "lease:2|old.example|50|10|0.020000|0|0|https://old.example/2"]  # fmt: skip
    redis_client.set(frontier.pending_key, json.dumps(old))
    sent = Sent(redis_client)
    _drain(Dispatcher(frontier, sent), sent, 2, timeout=5)
    got = {g.url: (g.lane, g.attempt) for _, g in sent.grants}
    assert got == {"https://old.example/1?a=1|b": (BULK_LANE, 2),
                   "https://old.example/2": (FRESH_LANE, 0)}  # fmt: skip


_HOLDER = """
import sys, time, redis
from newsq.config.settings import Settings
from newsq.fetch.frontier import Dispatcher, Frontier
from newsq.fetch.politeness import Politeness
client = redis.Redis.from_url(sys.argv[1])
settings = Settings(broker_url=sys.argv[1], key_prefix=sys.argv[2])
d = Dispatcher(Frontier(client, Politeness(client, settings)), lambda grants: None,
               lease=1.0, poll=0.2).start()
while True:
    time.sleep(1)
"""


def test_the_dispatcher_lease_moves_on_when_its_holder_dies(
    redis_client: redis.Redis, settings: Settings, redis_url: str
) -> None:
    frontier = _frontier(redis_client, settings)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLDER), redis_url,
                             settings.key_prefix], cwd=ROOT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while redis_client.get(frontier.lease_key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = redis_client.get(frontier.lease_key)
        assert first is not None and f":{proc.pid}:".encode() in first
        here = Dispatcher(frontier, lambda grants: None, lease=1.0, poll=0.2)
        assert here.step() == 0.5 and not here.holding  # stands by: asks every lease / 2
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        while not here.holding and time.monotonic() - killed < 5:
            time.sleep(here.step())
        assert here.holding and time.monotonic() - killed < 1.0 + 0.5 + 0.5
        assert redis_client.get(frontier.lease_key) == here.holder.encode()
        here.stop()
        assert redis_client.get(frontier.lease_key) is None  # handed back on stop
    finally:
        proc.kill()
        proc.wait()


def test_fetch_steps_park_and_the_dispatched_ones_fetch_with_their_slot(
    settings: Settings, redis_client: redis.Redis
) -> None:
    from newsq.pipeline import fetch_step

    with serve(Site(stories=4, copies=0, missing=0).build()) as site:
        rt = Runtime(dataclasses.replace(settings, host_rate=2.0, robots=False))  # type: ignore[arg-type]
        rt.fetcher.fetch(site.base + "/warm-up")  # the client's first request is slow
        site.requests.clear()
        urls = site.urls
        rt.ledger.enqueue(urls)
        first = fetch_step(rt, urls[0], hand_off=True)
        assert first.action == "next"
        parked = [fetch_step(rt, u, lane=BULK_LANE) for u in urls[1:]]
        assert {s.action for s in parked} == {"parked"}
        assert set(rt.ledger.states(urls[1:])) == {QUEUED}
        sent = Sent(redis_client)
        _drain(Dispatcher(rt.frontier, sent), sent, 3, timeout=10)
        grants = [g for _, g in sent.grants]
        assert [g.url for g in grants] == urls[1:]
        steps = [fetch_step(rt, g.url, g.attempt, lease=g.lease, interval=g.interval)
                 for g in grants]  # fmt: skip
        assert {s.action for s in steps} == {"next"}
        assert max(site.requests.values()) == 1 and len(site.requests) == 4
        rt.close()
    assert not set(rt.ledger.states(urls)) & TERMINAL  # fetched, not yet processed


def test_a_waiting_url_costs_the_same_whatever_its_hosts_backlog(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Parked, dispatched, claimed and released: per URL the same commands for a backlog
    of 10 and of 40 (they grew with it when every waiting URL asked at each token)."""
    per_url = []
    for n, host in ((10, "ten.example"), (40, "forty.example")):
        frontier = _frontier(redis_client, settings, host_rate=40.0, host_concurrency=10)
        before = commands_run(redis_client)
        assert frontier.offer(host, f"https://{host}/0", 0, BULK_LANE)
        for i in range(1, n):
            assert frontier.offer(host, f"https://{host}/{i}", 0, BULK_LANE) is None
        done: list[Grant] = []

        def send(grants: Sequence[Grant], done: list[Grant] = done, f: Frontier = frontier) -> None:
            for g in grants:  # what each dispatched fetch does around its request
                time.sleep(f.claim(g.host, g.interval, 2.0))  # until its slot
                f.release(g.host, g.lease)
                done.append(g)

        dispatcher = Dispatcher(frontier, send)
        deadline = time.monotonic() + 10
        while len(done) < n - 1 and time.monotonic() < deadline:
            time.sleep(min(dispatcher.step(), 0.005))
        dispatcher.stop()
        assert len(done) == n - 1
        per_url.append((commands_run(redis_client) - before) / n)
    assert per_url[1] <= per_url[0] * 1.15, per_url
    assert per_url[1] < 30, per_url


def test_requeue_stuck_leaves_waiting_hosts_alone_and_recovers_the_others(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL parked in its host's frontier queue makes no ledger progress while the
    queue drains: beat's requeue_stuck must leave it, and still send again a stuck URL
    of any other host (it stopped for every host while any frontier held a URL)."""
    from newsq.tasks import maintenance

    settings = dataclasses.replace(settings, stuck_after=0.2, host_rate=0.01)
    rt = Runtime(settings)
    try:
        busy, lost = "http://busy.example/a", "http://quiet.example/b"
        rt.ledger.enqueue([busy, lost])
        first = rt.frontier.offer("busy.example", "http://busy.example/first", 0, BULK_LANE)
        assert first is not None  # the host's one slot: what comes next waits for it
        assert rt.frontier.offer("busy.example", busy, 0, BULK_LANE) is None
        time.sleep(0.4)  # both URLs now look stuck in the ledger
        sent: list[str] = []
        monkeypatch.setattr(maintenance, "runtime", lambda: rt)
        monkeypatch.setattr(maintenance, "send_fetches",
                            lambda app, urls, *a, **k: sent.extend(urls))  # fmt: skip
        assert maintenance.requeue_stuck_task() == 1
        assert sent == [lost]
    finally:
        rt.close()


def test_a_release_wakes_the_dispatcher_for_the_freed_slot(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """A host without a rate at its concurrency cap got its freed slot only at the
    dispatcher's next look (a quarter of a second later: 300 URLs of one host at 4 slots
    took 8 s where 64 slots took 3): a release leaves a wake-up token, on which the
    holder blocks between dispatches."""
    frontier = _frontier(redis_client, settings, host_rate=0.0, host_concurrency=1)
    lease = frontier.offer("a.example", "https://a.example/0", 0, BULK_LANE)
    assert lease is not None
    assert frontier.offer("a.example", "https://a.example/1", 0, BULK_LANE) is None
    sent = Sent(redis_client)
    dispatcher = Dispatcher(frontier, sent, poll=60.0).start()
    try:
        time.sleep(0.3)  # the holder dispatched nothing (the one slot is taken): it waits
        assert dispatcher.holding and sent.urls() == []
        dispatcher.stop()  # (a stop wakes the holder too)
        # its next look as the holder planned it, later than the release: a loaded
        # machine that stalled the test past that look would leave nothing to wake
        redis_client.zadd(frontier.due_key, {"a.example": time.time() + 3600})
        frontier.release("a.example", lease)
        assert redis_client.lrange(frontier.wake_key, 0, -1) == [b"1"]
        assert frontier.wait_wake(1.0) and not frontier.wait_wake(0.05)  # one token
        dispatcher = Dispatcher(frontier, sent, poll=60.0).start()
        deadline = time.monotonic() + 10  # far short of the 60 s poll
        while not sent.urls() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sent.urls() == ["https://a.example/1"]
    finally:
        dispatcher.stop()
    assert dispatcher._thread is not None and not dispatcher._thread.is_alive()


def test_a_release_takes_the_time_from_its_caller(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """A release of a host without a rate: its lease, and the host due now if it waits.
    Three commands with its EVALSHA: the script asked Redis for TIME too, where the
    caller's reckoning of Redis' clock does, and read the host's next allowed time,
    which a host granted here without an interval has none of (five before)."""
    frontier = _frontier(redis_client, settings, host_rate=0.0, host_concurrency=1)
    lease = frontier.offer("r.example", "https://r.example/0", 0, BULK_LANE)
    assert lease is not None
    frontier.clock()  # its offset measured: the release itself asks no TIME
    before = commands_run(redis_client)
    frontier.release("r.example", lease)  # no URL of its host waits
    assert commands_run(redis_client) - before == 3
    lease = frontier.offer("r.example", "https://r.example/1", 0, BULK_LANE)
    assert lease is not None
    assert frontier.offer("r.example", "https://r.example/2", 0, BULK_LANE) is None
    redis_client.zadd(frontier.due_key, {"r.example": time.time() + 3600})  # not due for long
    frontier.release("r.example", lease)
    due = redis_client.zscore(frontier.due_key, "r.example")
    seconds, micros = redis_client.time()
    assert due is not None and abs(due - (seconds + micros / 1e6)) < 1.0  # due now


def _time_calls(client: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))


def test_a_park_of_a_host_without_a_rate_takes_the_time_from_its_caller(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 18: a granted park asked Redis for TIME, which only a host's rate needs
    exactly; a lease's expiry, a lifetime ahead, does with the caller's reckoning. Seven
    commands with its EVALSHA (eight before); a host with a rate still reads TIME."""
    polite = Politeness(redis_client, dataclasses.replace(settings, host_rate=0.0,
                                                          host_concurrency=4))  # fmt: skip
    frontier = Frontier(redis_client, polite)
    assert frontier.offer("w.example", "https://w.example/0", 0, BULK_LANE)  # script loaded
    frontier.clock()  # its offset measured
    before, times = commands_run(redis_client), _time_calls(redis_client)
    lease = frontier.offer("p.example", "https://p.example/0", 0, BULK_LANE)
    assert lease is not None
    assert commands_run(redis_client) - before == 7
    assert _time_calls(redis_client) == times
    expiry = redis_client.zscore(f"{frontier.prefix}:polite:leases:p.example", lease)
    seconds, micros = redis_client.time()
    ttl = polite.lease_ttl
    assert expiry is not None and abs(expiry - (seconds + micros / 1e6 + ttl)) < 1.0
    rated = _frontier(redis_client, settings, host_rate=2.0, host_concurrency=4)
    rated.clock()
    times = _time_calls(redis_client)
    assert rated.offer("q.example", "https://q.example/0", 0, BULK_LANE) is not None
    assert _time_calls(redis_client) == times + 1


def test_a_fetch_that_wakes_long_after_its_slot_takes_a_new_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatched fetch takes its slot, then sleeps until it; one whose process was
    paused meanwhile (SIGSTOP, a machine that froze) went at once when it woke, beside
    the fetches that had the slots after its own: 12 requests in a second at a limit of
    8 in the surge drill. It takes a new slot instead."""
    import newsq.pipeline as pipeline

    rt = Runtime(dataclasses.replace(settings, host_rate=10.0))
    try:
        host = "paused.example"
        lease = rt.frontier.offer(host, f"https://{host}/0", 0, BULK_LANE) or ""
        assert pipeline._claim(rt, f"https://{host}/0", host, lease, 0.1, 0, BULK_LANE)
        claims, real_sleep = _counted_claims(rt, monkeypatch), time.sleep

        def paused_sleep(seconds: float) -> None:  # the first sleep is cut by a pause
            real_sleep(seconds + (0.6 if len(claims) == 1 else 0.0))

        monkeypatch.setattr(pipeline.time, "sleep", paused_sleep)
        assert pipeline._claim(rt, f"https://{host}/1", host, lease, 0.1, 0, BULK_LANE) == lease
        assert len(claims) == 2 and 0 < claims[0] <= 0.1  # slept for one, woke late: anew
        assert claims[1] <= 0.1
    finally:
        rt.close()


def test_a_dispatchs_grants_go_to_the_broker_in_shared_messages(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 18: each granted URL was a message of its own, about ten broker commands a
    URL (LPUSH, BRPOP, the unacked bookkeeping and the ack); a dispatch's grants share
    messages of up to ``batch``, each URL keeping its slot and the lane it waited in."""
    import base64
    import json

    from newsq.config.celery import FETCH_MANY_TASK, FETCH_TASK, make_app, queue_keys
    from newsq.feeds.send import send_granted

    grants = [Grant(f"https://busy.example/{n}", n % 2, n % 3 and BULK_LANE, f"lease:{n}",
                    "busy.example", 0.2, 1e9 + n / 100) for n in range(9)]  # fmt: skip
    app = make_app(settings)
    send_granted(app, grants, 4)
    app.close()
    fresh = queue_keys(settings.key_prefix, "fetch")[0]
    raw = redis_client.lrange(fresh, 0, -1)[::-1]  # LPUSH: the first sent is last
    messages = [json.loads(m) for m in raw]
    assert [m["headers"]["task"] for m in messages] == [FETCH_MANY_TASK] * 2 + [FETCH_TASK]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    urls = bodies[0][0][0] + bodies[1][0][0] + [bodies[2][0][0]]
    assert urls == [g.url for g in grants]
    slots = bodies[0][1]["slots"] + bodies[1][1]["slots"] + [bodies[2][0][1:]]
    assert slots == [[g.attempt, g.lease, g.interval, g.lane, g.slot] for g in grants]


def test_a_dispatched_message_waits_for_its_slot_in_the_workers_timer(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 18: a dispatched fetch waited for its slot, up to a second ahead, in a
    thread of its worker's pool, so the pool's threads capped how fast the small hosts
    drained together. A message now goes in the order of its URLs' slots, its slots
    within ``SLOT_SPREAD`` of each other, and carries its first slot as its ETA (on
    this machine's clock): the worker's timer holds it until then."""
    import base64
    import json
    from datetime import datetime

    from newsq.config.celery import make_app, queue_keys
    from newsq.feeds.send import EARLY, SLOT_SPREAD, send_granted

    start = time.time() + 30  # ahead: "Redis' clock" below is this one plus 100 s
    slots = [start, start + 2 * SLOT_SPREAD, start + 0.01, start + 2 * SLOT_SPREAD + 0.01]
    grants = [Grant(f"https://h{n % 2}.example/{n}", 0, BULK_LANE, f"lease:{n}",
                    f"h{n % 2}.example", 0.5, at + 100) for n, at in enumerate(slots)]  # fmt: skip
    grants.append(Grant("https://free.example/", 0, BULK_LANE, "lease:f", "free.example", 0.0))
    app = make_app(settings)
    send_granted(app, grants, 8, lambda slot: slot - 100)
    app.close()
    fresh = queue_keys(settings.key_prefix, "fetch")[0]
    messages = [json.loads(m) for m in redis_client.lrange(fresh, 0, -1)[::-1]]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    urls = [b[0][0] if isinstance(b[0][0], list) else [b[0][0]] for b in bodies]
    assert urls == [["https://free.example/"], [g.url for g in grants[0:3:2]],
                    [g.url for g in grants[1:4:2]]]  # fmt: skip
    etas = [m["headers"]["eta"] for m in messages]
    assert etas[0] is None  # no rate: no slot to wait for
    for eta, first in zip(etas[1:], (slots[0], slots[1]), strict=True):
        assert abs(datetime.fromisoformat(eta).timestamp() - (first - EARLY)) < 0.001


def test_a_dispatched_fetch_on_time_asks_redis_nothing_for_its_slot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: each dispatched fetch took its rate time in a call of its own (4
    commands a URL); the dispatch that grants it takes it, so a fetch that comes before
    its slot only waits for it. One that comes after it takes a new one."""
    import newsq.pipeline as pipeline

    rt = Runtime(dataclasses.replace(settings, host_rate=4.0, host_concurrency=10))
    client = rt.redis
    try:
        host = "slots.example"
        grants = _granted(rt, host, 5)
        assert len(grants) >= 4
        rt.frontier.clock()  # its first reading of Redis' clock
        before = commands_run(client)
        for g in grants[:3]:  # each waits for its slot (a quarter of a second apart)
            assert pipeline._claim(rt, g.url, host, g.lease, g.interval, 0, BULK_LANE, g.slot)
        assert commands_run(client) == before  # none
        late = grants[3]
        time.sleep(max(0.0, late.slot - rt.frontier.clock()) + 0.6)  # it came late
        claims = _counted_claims(rt, monkeypatch)
        assert pipeline._claim(rt, late.url, host, late.lease, 0.25, 0, BULK_LANE, late.slot)
        assert len(claims) == 1  # a new slot, not the one gone by
    finally:
        rt.close()


def test_a_fetch_later_than_half_its_interval_takes_a_new_slot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: a fetch went on its slot up to a whole interval late; with the time it
    then takes to reach the host, two such in a row put 7 requests in one second on a
    host of 5/s (nginx's log, `bench.frontier`). Past half an interval it takes anew."""
    import newsq.pipeline as pipeline

    rt = Runtime(dataclasses.replace(settings, host_rate=4.0, host_concurrency=10))
    try:
        host = "late.example"
        grants = _granted(rt, host, 3)
        assert len(grants) >= 2
        claims = _counted_claims(rt, monkeypatch)
        first = grants[0]  # on time: its own slot, no claim
        assert pipeline._claim(rt, first.url, host, first.lease, 0.25, 0, BULK_LANE, first.slot)
        assert claims == []
        late = grants[1]  # 0.6 of its 0.25 s interval after its slot
        time.sleep(max(0.0, late.slot - rt.frontier.clock()) + 0.15)
        assert pipeline._claim(rt, late.url, host, late.lease, 0.25, 0, BULK_LANE, late.slot)
        assert len(claims) == 1  # a new slot, after the ones given
    finally:
        rt.close()


def _counted_claims(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of the frontier's claims from now on, as they are made."""
    claims: list[float] = []
    real_claim = rt.frontier.claim

    def claim(*args: object) -> float:
        claims.append(real_claim(*args))  # type: ignore[arg-type]
        return claims[-1]

    monkeypatch.setattr(rt.frontier, "claim", claim)
    return claims


def _granted(rt: Runtime, host: str, count: int) -> list[Grant]:
    """``count`` URLs of ``host`` offered (the first fetched at once), the rest as one
    dispatch grants them when the host is due, each with its slot."""
    assert rt.frontier.offer(host, f"https://{host}/0", 0, BULK_LANE)
    for n in range(1, count):
        assert rt.frontier.offer(host, f"https://{host}/{n}", 0, BULK_LANE) is None
    time.sleep(0.3)  # the host is due
    _, _, grants = rt.frontier.dispatch("me", 500, 5.0)
    assert all(g.slot > 0 for g in grants)
    return grants
