"""``NEWSQ_STATE_URL``: the shared state on a Redis of its own, the broker on another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import newsq
from newsq.config.celery import queue_keys
from newsq.config.settings import Settings
from newsq.connections import broker_redis, state_redis
from newsq.errors import ConfigError
from newsq.ledger import buckets_of
from newsq.metrics import RedisStateCollector
from newsq.workers.redis_server import RedisServer
from tests.cli import local_env, run_newsq
from tests.corpus_server import corpus, serve_pages


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis of this test's own for the broker; the session's holds the state."""
    with RedisServer() as server:
        yield server.url


def _keys(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(count=1000))
    finally:
        client.close()


def test_the_state_url_defaults_to_the_brokers_and_needs_one() -> None:
    settings = Settings.from_env({"NEWSQ_BROKER_URL": "redis://broker:6379/0"})
    assert state_redis(settings).get_connection_kwargs()["host"] == "broker"
    settings = Settings.from_env({"NEWSQ_BROKER_URL": "redis://broker:6379/0",
                                  "NEWSQ_STATE_URL": "redis://state:6380/2"})  # fmt: skip
    state = state_redis(settings).get_connection_kwargs()
    assert (state["host"], state["port"], state["db"]) == ("state", 6380, 2)
    assert broker_redis(settings).get_connection_kwargs()["host"] == "broker"
    with pytest.raises(ConfigError, match=r"^NEWSQ_STATE_URL: needs NEWSQ_BROKER_URL too"):
        Settings.from_env({"NEWSQ_STATE_URL": "redis://state:6380/2"})


def test_sentinel_urls_are_read_as_kombu_reads_them() -> None:
    from newsq.connections import SentinelURL

    parsed = SentinelURL.parse("sentinel://:p%40ss@s1:26380/3;sentinel://s2;")
    assert parsed == SentinelURL((("s1", 26380), ("s2", 26379)), 3, None, "p@ss")


def test_metrics_read_the_queues_on_the_broker_and_the_counts_on_the_state(
    broker_url: str, redis_url: str, key_prefix: str
) -> None:
    broker, state = redis.Redis.from_url(broker_url), redis.Redis.from_url(redis_url)
    broker.rpush(queue_keys(key_prefix, "fetch")[0], "m1", "m2")
    first, last = buckets_of(key_prefix)[0], buckets_of(key_prefix)[-1]  # summed when read
    state.hset(first.counts, mapping={"stored": 2, "duplicate": 1})
    state.hset(last.counts, mapping={"stored": 1})
    samples = {
        (m.name, tuple(s.labels.values())): s.value
        for m in RedisStateCollector(state, key_prefix, ["fetch"], broker).collect()
        for s in m.samples
    }
    assert samples[("newsq_queue_depth", ("fetch", "fresh"))] == 2
    assert samples[("newsq_ledger_urls", ("stored",))] == 3
    assert samples[("newsq_dedup_ratio", ())] == 0.25


@pytest.mark.slow
def test_a_run_keeps_its_state_on_the_state_redis_and_celerys_keys_on_the_broker(
    broker_url: str, redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    pages = corpus()
    chosen = sorted(pages)[:10]
    served = {f"/a/{pid}": pages[pid][0] for pid in chosen}
    env = local_env(redis_url, key_prefix, sqlite_url)
    env.update(NEWSQ_BROKER_URL=broker_url, NEWSQ_STATE_URL=redis_url, NEWSQ_HOST_RATE="100",
               NEWSQ_ROBOTS="1")  # fmt: skip
    with serve_pages(served) as base:
        urls = [f"{base}/a/{pid}" for pid in chosen]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        done = run_newsq("run", "--urls", str(tmp_path / "urls.txt"), "--workers", "1", env=env)
        assert done.returncode == 0, done.stderr

        celery = f"{key_prefix}:q:"
        on_broker, on_state = _keys(broker_url), _keys(redis_url)
        assert on_broker and all(key.startswith(celery) for key in on_broker), on_broker
        mine = [key for key in on_state if key_prefix in key]
        assert not [key for key in mine if key.startswith(celery)]
        # (a host's politeness keys expire a second after its turn: gone by now)
        kinds = [":url:", ":counts", f"{{{key_prefix}:dedup}}:", f"{key_prefix}:robots:",
                 f"{key_prefix}:bp:"]  # fmt: skip
        for kind in kinds:
            assert any(kind in key for key in mine), kind

        # the read commands and the API find the state where the workers left it
        stats = run_newsq("stats", "--once", env=env)
        assert stats.returncode == 0 and "stored" in stats.stdout, stats.stderr
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("NEWSQ_")})
        assert (newsq.status(urls[0], settings=settings) or {})["state"] == "stored"
        retried = run_newsq("retry", urls[0], env=env)
        assert retried.stdout.strip() == "re-enqueued 1", retried.stderr
    assert redis.Redis.from_url(broker_url).llen(queue_keys(key_prefix, "fetch")[0]) == 1
    assert newsq.status(urls[0], settings=settings)["state"] == "queued"  # type: ignore[index]
