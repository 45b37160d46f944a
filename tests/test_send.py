"""Sending fetch messages: many in one round trip to the broker (read through a relay
between the producer and a real Redis), none lost when the round trip fails; a big
input sent chunk by chunk as it is read in, in the lane of the whole."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import redis

import newsq
from newsq.config.celery import (
    BULK,
    FETCH_MANY_TASK,
    FETCH_TASK,
    FRESH,
    LANES,
    make_app,
    queue_keys,
)
from newsq.config.settings import Settings
from newsq.feeds.intake import enqueue
from newsq.feeds.send import FRESH_MOST, send_fetches
from newsq.ledger import Ledger
from newsq.records import QUEUED
from newsq.store.database import Store


class Relay:
    """A TCP relay on loopback to a Redis: counts the writes clients make through it
    and, with ``cut``, drops the first connection that sends a pipeline of LPUSHes
    (a broker lost mid-round-trip), after passing on its first ``keep`` bytes."""

    def __init__(self, upstream: str, *, cut: bool = False, keep: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = parts.path
        self.cut, self.keep = cut, keep
        self.writes = 0
        self.cuts = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}{self.db}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        with suppress(OSError):
            while chunk := client.recv(65536):
                with self.lock:
                    self.writes += 1
                    drop = self.cut and chunk.count(b"LPUSH") > 1
                    if drop:
                        self.cut = False
                        self.cuts += 1
                if drop:
                    upstream.sendall(chunk[: self.keep])
                    break
                upstream.sendall(chunk)
        for sock in (client, upstream):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @staticmethod
    def _down(upstream: socket.socket, client: socket.socket) -> None:
        with suppress(OSError):
            while chunk := upstream.recv(65536):
                client.sendall(chunk)

    def close(self) -> None:
        self.server.close()


@contextmanager
def relayed(settings: Settings, **kwargs: object) -> Iterator[tuple[Relay, Settings]]:
    relay = Relay(settings.broker_url, **kwargs)  # type: ignore[arg-type]
    try:
        yield relay, replace(settings, broker_url=relay.url)
    finally:
        relay.close()


def _sent_urls(client: redis.Redis, prefix: str) -> list[str]:
    """The URLs the fetch messages waiting in the broker name, one per message's URL."""
    return _lane_urls(client, prefix, FRESH) + _lane_urls(client, prefix, BULK)


def _lane_urls(client: redis.Redis, prefix: str, lane: int) -> list[str]:
    """The URLs of the fetch messages waiting in ``lane``."""
    urls: list[str] = []
    for raw in client.lrange(queue_keys(prefix, "fetch")[LANES.index(lane)], 0, -1):
        message = json.loads(raw)
        task = message["headers"]["task"]
        args = json.loads(base64.b64decode(message["body"]))[0]
        urls += [args[0]] if task == FETCH_TASK else args[0]
        assert task in (FETCH_TASK, FETCH_MANY_TASK)
    return urls


def test_thousands_of_messages_go_in_a_few_round_trips(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """3,000 URLs, one a message: a few writes to the broker, not one a message (each
    was its own round trip, 13 s of a 100,000-URL file's 20 s enqueue)."""
    urls = [f"https://many.example/{i}" for i in range(3000)]
    with relayed(settings) as (relay, relayed_settings):
        app = make_app(relayed_settings)
        try:
            assert send_fetches(app, urls, batch=1) == 3000
        finally:
            app.close()
    # a write waits for its reply before the next: one a message made over 3,000;
    # pipelines of PIPELINE_MOST arrive in reads of up to 64 KB (about 60 messages)
    assert relay.writes < 3000 / 10, relay.writes
    assert sorted(_sent_urls(redis_client, settings.key_prefix)) == sorted(urls)


@pytest.mark.parametrize("keep", [0, 4000], ids=["none-arrived", "some-arrived"])
def test_a_round_trip_cut_off_is_sent_again_and_nothing_is_lost(
    settings: Settings, redis_client: redis.Redis, keep: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker's connection drops mid-pipeline: its messages are sent again, one by
    one; a message that had arrived is then there twice (the ledger ends the second
    delivery at the worker), none is missing."""
    urls = [f"https://cut.example/{i}" for i in range(1500)]
    with relayed(settings, cut=True, keep=keep) as (relay, relayed_settings):
        app = make_app(relayed_settings)
        try:
            send_fetches(app, urls, batch=1)
        finally:
            app.close()
    assert relay.cuts == 1
    sent = _sent_urls(redis_client, settings.key_prefix)
    assert set(sent) == set(urls)
    assert (len(sent) > len(urls)) == (keep > 0)
    assert "sent again one by one" in caplog.text


def test_a_big_input_is_sent_chunk_by_chunk_each_once_the_ledger_holds_it(
    settings: Settings, sqlite_url: str, redis_client: redis.Redis
) -> None:
    """The first fetches go out while the rest of the input is read in (all were sent
    once the whole input was in the ledger); a URL given twice, across chunks, is new
    once and not counted as known."""
    urls = [f"https://chunks.example/{i}" for i in range(35)]
    ledger = Ledger(redis_client, settings.key_prefix)
    store = Store.from_url(sqlite_url)
    sends: list[list[str]] = []

    def send(new: list[str]) -> None:
        assert set(ledger.states(new)) == {QUEUED}  # the ledger first, then the message
        later = [u for u in urls if u not in {x for part in sends for x in part} | set(new)]
        assert not any(ledger.states(later))  # not read in yet
        sends.append(new)

    try:
        intake = enqueue(ledger, store, [*urls, urls[3]], send=send, chunk=10)
    finally:
        store.close()
    assert [len(part) for part in sends] == [10, 10, 10, 5]
    assert intake.new == urls and intake.known == []


def test_a_backlog_read_in_chunks_still_goes_in_one_lane(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane is the whole input's: over FRESH_MOST new URLs, read in chunks smaller
    than that, all go bulk; fewer, all fresh."""
    monkeypatch.setattr("newsq.feeds.intake.INTAKE_CHUNK", FRESH_MOST // 2)
    backlog = [f"https://lanes.example/old/{i}" for i in range(FRESH_MOST + 1)]
    news = [f"https://lanes.example/new/{i}" for i in range(FRESH_MOST)]
    newsq.enqueue(backlog, settings=settings)
    newsq.enqueue(news, settings=settings)
    fresh, bulk = (_lane_urls(redis_client, settings.key_prefix, lane) for lane in (FRESH, BULK))
    assert sorted(bulk) == sorted(backlog)
    assert sorted(fresh) == sorted(news)
