"""URLs no message stands for, found and sent again: real kombu messages taken from a
real Redis broker the way a worker takes them, and a real ``newsq run`` that loses one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from newsq.config.celery import (
    BACKFILL_TASK,
    FETCH_MANY_TASK,
    FETCH_QUEUE,
    PROCESS_QUEUE,
    make_app,
    queue_keys,
)
from newsq.config.settings import Settings
from newsq.feeds.send import send_fetches
from newsq.fetch.frontier import BULK_LANE, FRESH_LANE
from newsq.fetch.politeness import fetch_tag
from newsq.ledger import Ledger
from newsq.records import QUEUED, STORED, TERMINAL
from newsq.recovery import (
    Turnover,
    find_lost,
    held_urls,
    intake_mark,
    intake_running,
    message_urls,
    oldest_sent,
    requeue_lost,
    take_turn,
)
from newsq.urls import host_of
from tests.cli import local_env, run_newsq, store_outcome
from tests.corpus_server import corpus, serve_pages

NONE_WAITING: dict[str, int] = {}


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings.from_env({"NEWSQ_BROKER_URL": redis_url, "NEWSQ_KEY_PREFIX": key_prefix})


@pytest.fixture
def ledger(redis_client: redis.Redis, key_prefix: str) -> Ledger:
    return Ledger(redis_client, key_prefix)


class Consumer:
    """Takes messages off a queue unacked, as a worker's consumer does: each then waits
    in the broker's ``unacked`` hash while this connection lives (closed, kombu gives
    them back)."""

    def __init__(self, app: Celery) -> None:
        self.conn = app.connection_for_read()
        self.channel = self.conn.default_channel

    def take(self, queue: str, count: int) -> None:
        for _ in range(count):
            assert self.channel.basic_get(queue, no_ack=False) is not None

    def close(self) -> None:
        self.conn.close()


def test_a_url_no_message_stands_for_is_lost_once_the_queues_are_empty(
    settings: Settings, ledger: Ledger, redis_client: redis.Redis, key_prefix: str
) -> None:
    app = make_app(settings)
    one, two, three, gone = urls = [f"http://a.test/{n}" for n in range(3)] + ["http://b.test/x"]
    ledger.enqueue(urls)
    send_fetches(app, [one], 1)  # newsq.fetch
    app.send_task(FETCH_MANY_TASK, args=([two, three],), queue=FETCH_QUEUE)  # one message
    look = lambda waiting=NONE_WAITING: find_lost(  # noqa: E731
        redis_client, ledger, key_prefix, lambda: waiting, older_than=0
    )
    assert look() == set()  # messages wait in a queue: any URL may be behind them
    worker = Consumer(app)
    worker.take(FETCH_QUEUE, 2)
    assert held_urls(redis_client, key_prefix) == {one, two, three}
    assert look() == {gone}
    assert look({"b.test": 1}) == set()  # its host's URLs wait in the frontier: slow
    # one finished whose ack the old master took along: still held, it hides no loss
    ledger.move(one, STORED)
    assert look() == {gone}
    assert find_lost(redis_client, ledger, key_prefix, lambda: NONE_WAITING, older_than=60) == set()

    sent: list[str] = []
    assert requeue_lost(redis_client, ledger, key_prefix, lambda: NONE_WAITING, sent.append,
                        older_than=0, confirm=0) == sent == [gone]  # fmt: skip
    assert ledger.get(gone)["state"] == QUEUED  # type: ignore[index]
    # a held backfill range may be moving URLs it does not name: nothing is called lost
    app.send_task(BACKFILL_TASK, args=["warc", 0, 10], queue=PROCESS_QUEUE)
    worker.take(PROCESS_QUEUE, 1)
    assert held_urls(redis_client, key_prefix) is None
    assert look() == set()
    worker.close()
    app.close()


def test_queues_that_never_empty_are_looked_into_once_they_turned_over(
    settings: Settings, ledger: Ledger, redis_client: redis.Redis, key_prefix: str
) -> None:
    """Every message waiting sent after the watch's mark: one waiting then was taken
    since, so a URL with no progress since before the mark that no held message names
    is lost; but for one the frontier's dispatcher sent meanwhile (its ledger entry
    untouched), and never when a waiting message has no stamp."""
    app = make_app(settings)
    margin = 0.3
    dispatched: set[str] = set()
    turnover = Turnover(margin, lambda since: set(dispatched), lambda: 0.0)
    look = lambda: find_lost(  # noqa: E731
        redis_client, ledger, key_prefix, lambda: NONE_WAITING, older_than=0, turnover=turnover
    )
    gone, sent_late, old, new = ("http://b.test/gone", "http://c.test/late", "http://a.test/old",
                                 "http://a.test/new")  # fmt: skip
    ledger.enqueue([gone, sent_late, old])
    send_fetches(app, [old], 1)
    time.sleep(margin + 0.05)
    assert look() == set()  # the queue is not empty: the first look marks the time
    assert look() == set()  # old's message, sent before the mark, still waits
    worker = Consumer(app)
    worker.take(FETCH_QUEUE, 1)  # old's: taken, held
    time.sleep(margin + 0.05)
    ledger.enqueue([new])
    send_fetches(app, [new, sent_late], 1)  # sent_late: as the dispatcher sends, late
    dispatched.add("c.test")
    assert look() == {gone}
    dispatched.clear()
    assert look() == {gone, sent_late}  # what the dispatcher's word keeps from a resend
    turnover.looked()
    assert look() == set()  # the next turnover counts from that look
    fresh = queue_keys(key_prefix, FETCH_QUEUE)[0]
    unstamped = json.loads(redis_client.lindex(fresh, 0))  # type: ignore[arg-type]
    del unstamped["headers"]["newsq_sent"]  # a sender of before
    redis_client.rpush(fresh, json.dumps(unstamped))  # the oldest now
    assert oldest_sent(redis_client, key_prefix) is None
    young = Turnover(margin, lambda since: set(), time.time)  # the lease just taken
    assert [young.cutoff(redis_client, key_prefix) for _ in range(2)] == [None, None]
    worker.close()
    app.close()


def test_no_url_is_taken_for_lost_while_an_intake_sends_its_messages(
    ledger: Ledger, redis_client: redis.Redis, key_prefix: str
) -> None:
    """An intake writes all its URLs to the ledger before it sends their messages: a
    file of millions takes longer than the look's 30 s, and its first URLs would be sent
    twice. While it runs, it is marked and no look is made; a crashed one's mark ends."""
    url = "http://a.test/being-sent"
    look = lambda: find_lost(  # noqa: E731
        redis_client, ledger, key_prefix, lambda: NONE_WAITING, older_than=0
    )
    with intake_mark(redis_client, key_prefix):
        ledger.enqueue([url])
        assert intake_running(redis_client, key_prefix)
        assert look() == set()
    assert not intake_running(redis_client, key_prefix)
    assert look() == {url}  # its intake ended and sent nothing: lost
    key = f"{key_prefix}:recovery:intakes"
    redis_client.zadd(key, {"crashed": time.time() - 1})  # its hour is over
    assert look() == {url} and redis_client.zcard(key) == 0


def test_one_look_for_lost_urls_at_a_time_across_the_cluster(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    """Beat, each worker's watch and a run share one turn: two looks at once would both
    find a lost URL and send it twice."""
    assert take_turn(redis_client, key_prefix, 0.3)
    assert not take_turn(redis_client, key_prefix, 0.3)  # another caller, the same turn
    time.sleep(0.35)
    assert take_turn(redis_client, key_prefix, 0.3)


@pytest.fixture
def pages() -> Iterator[tuple[str, list[str]]]:  # the server's base, four of its pages
    docs = corpus()
    served = {f"/a/{pid}": html for pid, (html, _) in docs.items()}
    with serve_pages(served) as base:
        yield base, [f"{base}/a/{pid}" for pid in sorted(docs)[:4]]


def test_a_run_sends_again_a_url_whose_only_entry_was_lost(
    pages: tuple[str, list[str]], redis_url: str, key_prefix: str, sqlite_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """One host at 1 request/s: its later URLs wait in its frontier queue, and the last
    one is taken off it, as a broker's master killed before it replicated a message
    loses one. The run's workers find it with nothing left to move it on and send it
    again (the run would otherwise wait out its --timeout)."""
    _, urls = pages
    env = local_env(redis_url, key_prefix, sqlite_url, NEWSQ_STUCK_AFTER="3")
    env["NEWSQ_HOST_RATE"] = "1"
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    client = redis.Redis.from_url(redis_url)
    host = host_of(urls[0])
    lanes = [f"{fetch_tag(key_prefix)}:frontier:{host}:{lane}" for lane in (FRESH_LANE, BULK_LANE)]
    taken: list[int] = []

    def lose_the_last() -> None:
        deadline = time.monotonic() + 30
        while not taken and time.monotonic() < deadline:
            for key in lanes:  # entries are "lane|attempt|url"
                for entry in client.lrange(key, 0, -1):
                    if entry.decode().endswith(f"|{urls[-1]}"):
                        taken.append(int(client.lrem(key, 0, entry)))
            time.sleep(0.005)

    thief = threading.Thread(target=lose_the_last, daemon=True)
    thief.start()
    cmd = [sys.executable, "-m", "newsq", "run", "--urls", str(tmp_path / "urls.txt"),
           "--workers", "1", "--fetch-threads", "2", "--timeout", "40"]  # fmt: skip
    run = subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=120)
    thief.join()
    assert taken == [1]  # it was parked in its host's queue, and taken off it
    assert run.returncode == 0, run.stderr
    states, stored = store_outcome(sqlite_url)
    assert set(states) == set(urls) and set(states.values()) <= TERMINAL
    assert len(stored) == len(set(stored))
    client.close()


def test_workers_without_beat_send_again_a_message_a_dying_worker_took(
    pages: tuple[str, list[str]], redis_url: str, key_prefix: str, sqlite_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """kombu's Redis transport pops a message off its queue (BRPOP) before it records it
    as unacked: a worker killed in between takes the message with it, and no visibility
    timeout brings it back (seen once in the SIGKILL fault case). One is popped that way
    here; workers that run no beat find its URL with nothing left to move it on, and
    send it again."""
    _, urls = pages
    env = local_env(redis_url, key_prefix, sqlite_url, NEWSQ_STUCK_AFTER="4")
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    done = run_newsq("enqueue", "--urls", str(tmp_path / "urls.txt"), env=env)
    assert done.returncode == 0, done.stderr
    client = redis.Redis.from_url(redis_url)
    keys = [k for k in queue_keys(key_prefix, FETCH_QUEUE) if client.llen(k)]
    assert client.rpop(keys[0]) is not None  # the dying worker's BRPOP
    ledger = Ledger(client, key_prefix)
    worker = subprocess.Popen(
        [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
         "--pool", "threads", "--concurrency", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(s in TERMINAL for s in ledger.states(urls)):
                break
            time.sleep(0.2)
        states = dict(zip(urls, ledger.states(urls), strict=True))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        client.close()
    assert all(s in TERMINAL for s in states.values()), states


def test_workers_send_again_a_lost_message_while_the_queues_never_empty(
    redis_url: str, key_prefix: str, sqlite_url: str
) -> None:
    """A busy cluster's queues may never empty, and a URL whose message a dying worker
    took waited for a quiet moment that never came. Here URLs come faster than the one
    worker fetches them (a site of 0.25 s a page), so the fetch queue only grows; one
    message is popped as the dying worker's BRPOP would. Once every message waiting was
    sent after the watch's last look, the lost URL is sent again."""
    docs = corpus()
    page = f"/a/{sorted(docs)[0]}"
    env = local_env(redis_url, key_prefix, sqlite_url, NEWSQ_STUCK_AFTER="4",
                    NEWSQ_FETCH_BATCH="1", NEWSQ_HOST_CONCURRENCY="8")  # fmt: skip
    settings = Settings.from_env(env)
    app = make_app(settings)
    client = redis.Redis.from_url(redis_url)
    ledger = Ledger(client, key_prefix)
    fresh = queue_keys(key_prefix, FETCH_QUEUE)[0]
    with serve_pages({page: docs[sorted(docs)[0]][0]}, delay=0.25) as base:
        lost = f"{base}{page}?n=lost"
        ledger.enqueue([lost])
        send_fetches(app, [lost], 1, lane=0)
        assert client.rpop(fresh) is not None  # the dying worker's BRPOP
        before = ledger.get(lost)["t_upd"]  # type: ignore[index]
        stop = threading.Event()

        def feed() -> None:  # 6 URLs a second against the worker's 4 at most
            n = 0
            while not stop.wait(1 / 6):
                url = f"{base}{page}?n={n}"
                ledger.enqueue([url])
                send_fetches(app, [url], 1, lane=0)
                n += 1

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        worker = subprocess.Popen(
            [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
             "--pool", "threads", "--concurrency", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        depths = []
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                depths.append(client.llen(fresh))
                if ledger.get(lost)["t_upd"] != before:  # type: ignore[index]
                    break
                time.sleep(0.2)
            waiting = [m for key in queue_keys(key_prefix, FETCH_QUEUE)
                       for m in client.lrange(key, 0, -1)]  # fmt: skip
            taken = [json.loads(m)[0] for m in client.hvals(f"{key_prefix}:q:unacked")]
            messages = [json.loads(m) for m in waiting] + taken
            sent_again = lost in {url for m in messages for url in message_urls(m)}
        finally:
            stop.set()
            feeder.join()
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
            app.close()
            client.close()
    assert min(depths[5:]) > 0  # the queue never emptied meanwhile
    assert sent_again
