"""The URL ledger on a real Redis: atomic enqueue and state moves."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import redis

from newsq.config.settings import Settings
from newsq.ledger import Ledger


def _enqueue(redis_url: str, prefix: str, urls: list[str], out: mp.Queue) -> None:  # type: ignore[type-arg]
    ledger = Ledger(redis.Redis.from_url(redis_url), prefix)
    out.put(sum(ledger.enqueue(urls)))


def test_concurrent_enqueuers_enqueue_each_url_once(redis_url: str, key_prefix: str) -> None:
    urls = [f"http://example.com/{i}" for i in range(300)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_enqueue, args=(redis_url, key_prefix, urls, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sum(out.get(timeout=5) for _ in procs) == len(urls)
    ledger = Ledger(redis.Redis.from_url(redis_url), key_prefix)
    assert ledger.counts()["queued"] == len(urls)


def test_terminal_state_is_kept_and_counted(redis_client: redis.Redis, key_prefix: str) -> None:
    ledger = Ledger(redis_client, key_prefix)
    url = "http://example.com/a"
    assert ledger.enqueue([url, url]) == [True, False]
    assert ledger.begin(url, "fetching") == ("queued", 1)
    assert ledger.move(url, "failed", reason="timeout") == "fetching"
    # a second delivery of a finished URL does nothing
    assert ledger.begin(url, "fetching") == ("failed", 0)
    assert ledger.move(url, "stored") == "failed"
    counts = ledger.counts()
    assert counts["failed"] == 1 and counts["fetching"] == 0 and counts["stored"] == 0
    assert ledger.reasons() == {"failed:timeout": 1}
    # a user's retry may leave a terminal state
    assert ledger.move(url, "queued", force=True, reason=None) == "failed"
    assert ledger.get(url)["state"] == "queued"  # type: ignore[index]
    assert "reason" not in ledger.get(url)  # type: ignore[operator]


def test_deliveries_count_unfinished_takes(redis_client: redis.Redis, key_prefix: str) -> None:
    ledger = Ledger(redis_client, key_prefix)
    url = "http://example.com/b"
    ledger.enqueue([url])
    assert ledger.begin(url, "fetching")[1] == 1
    assert ledger.begin(url, "fetching")[1] == 2  # the first take never finished
    ledger.move(url, "fetched")
    assert ledger.begin(url, "fetched")[1] == 1
    assert [u for u, _, _ in ledger.stuck(0)] == [url]


def _commands(client: redis.Redis) -> int:
    """Commands run so far, those inside Lua scripts included (less the INFO asking)."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values()) + 1


def test_a_url_costs_a_few_commands_from_take_to_stored(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """Each call reads the entry once and writes it once: no HSET per field, no HDEL of
    a field that is not there, no throughput series written per URL."""
    ledger = Ledger(redis_client, key_prefix)
    url = "http://example.com/story"
    ledger.enqueue([url])
    before = _commands(redis_client)
    ledger.begin(url, "fetching")
    taken = _commands(redis_client)
    verdict = {"story_id": "ab" * 8, "duplicate_of": None, "similarity": 1.0, "match": "new"}
    ledger.move(url, "stored", final_url=url, attempts=1, **verdict)
    done = _commands(redis_client)
    # before: 9 and 20 (an HSETNX, HSET or HDEL per field, the series' HINCRBY+EXPIRE),
    # then 6 and 7 (an HINCRBY for the state left and one for the state reached)
    assert (taken - before - 1, done - taken - 1) == (5, 6)  # with its EVALSHA each
    entry = ledger.get(url)
    assert entry is not None and "duplicate_of" not in entry
    assert (entry["state"], entry["story_id"], entry["attempts"]) == ("stored", "ab" * 8, "1")
    assert entry["t_start"] and entry["t_done"] and entry["t_enq"]
    assert ledger.counts()["stored"] == 1 and ledger.counts()["fetching"] == 0
    assert (
        redis_client.ttl(ledger.key(url)) > 0 and redis_client.zcard(ledger.bucket(url).active) == 0
    )
    series = f"{{{key_prefix}}}:tput:*"
    assert list(redis_client.scan_iter(match=series)) == []  # counted in this process...
    ledger.flush()
    assert len(list(redis_client.scan_iter(match=series))) == 1  # ...added once a second


def test_an_enqueue_counts_and_activates_a_bucket_s_new_urls_at_once(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """Per new URL an EXISTS and an HSET; the bucket's counter and active set take all
    of a call's new URLs in one HINCRBY and one ZADD (one of each per URL before)."""
    ledger = Ledger(redis_client, key_prefix)
    urls = [f"http://example.com/q/{i}" for i in range(240)]
    ledger.enqueue(urls[:40])
    before = _commands(redis_client)
    assert ledger.enqueue(urls) == [False] * 40 + [True] * 200
    spent = _commands(redis_client) - before - 1
    calls = len(ledger.buckets)  # an EVALSHA per bucket
    assert spent <= 240 + 200 + 3 * calls, spent  # before: 240 + 3 * 200 + calls
    assert ledger.counts()["queued"] == 240 and ledger.unfinished() == 240
    assert {u for u, _, _ in ledger.stuck(0, limit=1000)} == set(urls)


def _enqueued(client: redis.Redis, prefix: str, urls: list[str]) -> Ledger:
    ledger = Ledger(client, prefix)
    ledger.enqueue(urls)
    return ledger


def test_the_throughput_series_is_added_within_a_second(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    from newsq.throughput import FLUSH_SECONDS, Throughput

    urls = [f"http://example.com/{i}" for i in range(5)]
    ledger = _enqueued(redis_client, key_prefix, urls)
    for url in urls:
        ledger.move(url, "stored")
    ledger.move(urls[0], "failed")  # already terminal: not counted again
    series = Throughput(lambda: redis_client, key_prefix)
    deadline = time.monotonic() + FLUSH_SECONDS + 2
    while series.counts(60)["stored"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert series.counts(60) == {"stored": 5, "duplicate": 0, "failed": 0, "skipped": 0}


def test_closing_the_runtime_adds_its_outcomes_to_the_series(settings: Settings) -> None:
    """They waited for the recorder's timer, which then wrote through the closed client
    (on a Redis Cluster client: an AttributeError in the timer's thread)."""
    from newsq.resources import Runtime
    from newsq.throughput import Throughput

    rt = Runtime(settings)
    url = "http://example.com/closed"
    rt.ledger.enqueue([url])
    rt.ledger.move(url, "stored")
    rt.close()
    client = redis.Redis.from_url(settings.broker_url or "")
    try:
        assert Throughput(lambda: client, settings.key_prefix).counts(60)["stored"] == 1
    finally:
        client.close()


def test_a_retried_url_leaves_its_terminal_state_and_keeps_its_entry(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    ledger = Ledger(redis_client, key_prefix)
    url = "http://example.com/retry"
    ledger.enqueue([url])
    ledger.move(url, "failed", reason="timeout", attempts=3)
    assert ledger.reasons() == {"failed:timeout": 1}
    assert redis_client.ttl(ledger.key(url)) > 0
    assert ledger.move(url, "queued", force=True, reason=None, attempts=0) == "failed"
    entry = ledger.get(url)
    assert entry is not None and "reason" not in entry and entry["attempts"] == "0"
    assert redis_client.ttl(ledger.key(url)) == -1  # kept until it ends again
    assert ledger.counts()["failed"] == 0 and ledger.counts()["queued"] == 1
    assert redis_client.zscore(ledger.bucket(url).active, ledger.key(url)) is not None


def test_waiting_reads_the_states_only_when_they_may_all_have_ended(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """``newsq run``'s wait: a command per ledger bucket a poll (one round trip), not an
    HGET per pending URL a poll."""
    import threading

    from newsq.api import wait_for

    urls = [f"http://example.com/w/{i}" for i in range(200)]
    ledger = _enqueued(redis_client, key_prefix, urls)
    polls: list[int] = []

    def finish() -> None:
        for url in urls:
            ledger.move(url, "stored")
            time.sleep(0.002)

    worker = threading.Thread(target=finish)
    before = _commands(redis_client)
    worker.start()
    assert wait_for(ledger, urls, 30, every=0.02, rescan=60, on_poll=lambda d, t: polls.append(d))
    worker.join()
    spent = _commands(redis_client) - before - 1 - 7 * len(urls)  # less the moves
    assert polls[-1] == len(urls) and len(polls) > 10
    assert polls == sorted(polls) and len(set(polls)) > 5  # progress between the reads
    # before: every poll read every pending URL, ~100 per poll here
    assert spent <= len(polls) * len(ledger.buckets) + 3 * len(urls), (spent, len(polls))


def test_a_pass_over_the_pending_urls_costs_a_command_per_bucket(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """A pass (here one every poll) asks each bucket's active set which URLs have left
    it: a URL seen there that left it has ended, and no state is read (an HGET per
    pending URL a pass before)."""
    from newsq.api import wait_for

    urls = [f"http://example.com/p/{i}" for i in range(200)]
    ledger = _enqueued(redis_client, key_prefix, urls)
    polls: list[int] = []

    def poll(done: int, total: int) -> None:
        polls.append(done)
        for url in urls[len(polls) * 10 - 10 : len(polls) * 10]:  # ten end between polls
            ledger.move(url, "stored")

    before = _commands(redis_client)
    assert wait_for(ledger, urls, 30, every=0.001, rescan=0, on_poll=poll)
    spent = _commands(redis_client) - before - 7 * len(urls)  # less the moves
    assert len(polls) >= len(urls) // 10
    # a poll: the count before and after its pass and the pass, each a command per
    # bucket; before, ~2,600 (each pass read every pending URL's state)
    assert spent <= len(polls) * (3 * len(ledger.buckets) + 2), (spent, len(polls))


class _Clock:
    """The wait's clock, moved only by its sleeps: what it polls when, exactly."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_straggler_is_seen_ending_within_the_end_poll(
    redis_client: redis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last URL of a run, ending a while after the others, was seen only at the next
    poll of the wait's full pace (0.5 s): its polls had slowed, as no URL ended between
    them. While few are left and URLs ended lately it polls every END_POLL."""
    from types import SimpleNamespace

    from newsq import api

    clock = _Clock()
    monkeypatch.setattr(api, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    urls = [f"http://example.com/s/{i}" for i in range(20)]
    ledger = _enqueued(redis_client, key_prefix, urls)
    for url in urls[:-1]:
        ledger.move(url, "stored")
    start, ended_at = clock.now, []

    def poll(done: int, total: int) -> None:
        if not ended_at and clock.now - start >= 1.5:  # the straggler ends
            ledger.move(urls[-1], "stored")
            ended_at.append(clock.now)

    assert api.wait_for(ledger, urls, 30, every=0.5, rescan=60, on_poll=poll)
    assert ended_at and clock.now - ended_at[0] <= api.END_POLL + 1e-9, clock.now - ended_at[0]


def test_a_url_with_no_entry_is_not_done(redis_client: redis.Redis, key_prefix: str) -> None:
    from newsq.api import wait_for

    ledger = _enqueued(redis_client, key_prefix, ["http://example.com/e/1"])
    ledger.move("http://example.com/e/1", "stored")
    assert not wait_for(ledger, ["http://example.com/e/1", "http://example.com/e/never"], 0.3,
                        every=0.01, rescan=0)  # fmt: skip


def test_a_forked_child_counts_its_own_outcomes_only(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """A prefork child starts its recorder afresh: no lock held by the parent's timer,
    none of the parent's counts added twice."""
    import os
    import threading

    from newsq.throughput import Throughput

    urls = [f"http://example.com/f/{i}" for i in range(3)]
    ledger = _enqueued(redis_client, key_prefix, urls)
    ledger.move(urls[0], "stored")  # counted in the parent, its timer running
    held, release = threading.Event(), threading.Event()

    def flushing() -> None:  # holds the lock at the fork, as a flushing timer may
        with ledger.throughput._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=flushing)
    holder.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: moves the others and adds only those
        try:
            for url in urls[1:]:
                ledger.move(url, "stored")
            ledger.flush()
        finally:
            os._exit(0)
    release.set()
    holder.join()
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:  # stuck on the lock the parent held
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done[0] == pid and done[1] == 0, "the child never finished its moves"
    series = Throughput(lambda: redis_client, key_prefix)
    assert series.counts(60)["stored"] == 2
    ledger.flush()
    assert series.counts(60)["stored"] == 3
