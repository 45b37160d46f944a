"""Redis stays bounded: every key newsq writes expires, or is one the README says is
bounded by something else ("What newsq keeps in Redis")."""

from __future__ import annotations

import time

import redis

from newsq.ledger import Ledger

RETENTION_S = 1.0


def test_the_dead_list_keeps_only_the_retention(redis_client: redis.Redis, key_prefix: str) -> None:
    ledger = Ledger(redis_client, key_prefix, retention_days=RETENTION_S / 86400)
    ledger.add_dead("https://news.example/first")
    assert 0 < redis_client.ttl(ledger.dead_key) <= 1
    time.sleep(RETENTION_S + 0.2)
    ledger.add_dead("https://news.example/second")
    assert ledger.dead() == ["https://news.example/second"]
    assert redis_client.zcard(ledger.dead_key) == 1  # the first is gone, not only hidden


def test_the_unbounded_dead_set_of_before_is_moved_once(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    ledger = Ledger(redis_client, key_prefix)
    redis_client.sadd(f"{{{key_prefix}}}:dead", "https://news.example/a", "https://news.example/b")
    assert ledger.dead() == ["https://news.example/a", "https://news.example/b"]
    assert not redis_client.exists(f"{{{key_prefix}}}:dead")
    assert redis_client.ttl(ledger.dead_key) > 0
    ledger.remove_dead("https://news.example/a")
    assert ledger.dead() == ["https://news.example/b"]
