"""The dedup index's layout in Redis: a decide costs a dozen commands, an article a few
hundred bytes, and copies indexed by the layouts before (a table of one field per entry;
small hashes by digest and a filter per generation) are still found."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
import redis

from newsq.config.settings import Settings
from newsq.dedup.index import DedupIndex
from newsq.demo.dedup_eval import edit, gold_texts
from newsq.records import Verdict

GOLD = gold_texts()


def put(index: DedupIndex, url: str, text: str) -> Verdict:
    return index.decide(url=url, final_url=url, canonical_url=None, text=text, site=None)


def commands(client: redis.Redis) -> int:
    """Commands run so far, those inside Lua scripts included."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def test_a_new_article_costs_eight_redis_commands(
    redis_client: redis.Redis, settings: Settings
) -> None:
    index = DedupIndex(redis_client, settings)
    put(index, *GOLD[0])  # the legacy check, once a minute, happens here
    spent = []
    for url, text in GOLD[1:21]:
        before = commands(redis_client)
        verdict = put(index, url, text)
        spent.append(commands(redis_client) - before - 1)  # the INFO itself
        assert verdict.kind == "new"
    # the script, an HMGET of each of the 5 live generations, the doc id's INCR and one
    # HSET: its EXPIREAT was the generation's first article's. Before the table: ~65 (an
    # HSET and an EXPIREAT per entry, a filter per generation); before the doc records
    # went into it, 11 (their own hash's HSET and EXPIREAT, the table's EXPIREAT)
    assert max(spent) == 8, spent
    base = index.base
    assert list(redis_client.scan_iter(match=f"{base}:k:*")) == []  # the old layout:
    assert list(redis_client.scan_iter(match=f"{base}:f:*")) == []  # never written


def to_own_doc_hashes(client: redis.Redis, index: DedupIndex) -> None:
    """Move every doc record out of its table as the versions before wrote it: a hash
    of docid % doc_buckets, ``<base>:d:<gen>:<bucket>``; and the table's mark that its
    EXPIREAT is set, which they did not write."""
    for key in list(client.scan_iter(match=f"{index.base}:b:*")):
        gen = key.decode().rsplit(":", 1)[1]
        expire_at = client.expiretime(key)
        for field, value in client.hgetall(key).items():
            if field == b"x":
                client.hdel(key, field)
            elif field.startswith(b"d") and len(field) != 8:
                docid = int(field[1:])
                own = f"{index.base}:d:{gen}:{docid % index.config.doc_buckets}"
                client.hset(own, str(docid), value)
                client.expireat(own, expire_at)
                client.hdel(key, field)


def to_one_field_tables(client: redis.Redis, index: DedupIndex) -> None:
    """Unpack every table as the version before packing wrote it: one field per entry,
    ``<base>:t:<gen>``, a docid in decimal for a text or band digest."""
    to_own_doc_hashes(client, index)
    for key in list(client.scan_iter(match=f"{index.base}:b:*")):
        gen = key.decode().rsplit(":", 1)[1]
        table, expire_at = f"{index.base}:t:{gen}", client.expiretime(key)
        for field, value in client.hgetall(key).items():
            if len(field) == 8:  # a url record, as it was
                client.hset(table, field, value)
                continue
            for at in range(0, len(value), 13):
                client.hset(table, value[at : at + 8], int.from_bytes(value[at + 8 : at + 13]))
        client.expireat(table, expire_at)
        client.delete(key)


def to_previous_layout(client: redis.Redis, index: DedupIndex) -> None:
    """Move every table entry to the layout of before the table, as the previous version
    wrote it: a small hash by the digest's bytes 1-3, a filter bit by its bytes 4-7."""
    config = index.config
    to_one_field_tables(client, index)
    for key in list(client.scan_iter(match=f"{index.base}:t:*")):
        gen = key.decode().rsplit(":", 1)[1]
        expire_at = client.expiretime(key)
        for field, value in client.hgetall(key).items():
            bucket = int.from_bytes(field[:3], "big") % config.buckets
            small = f"{index.base}:k:{gen}:{bucket}"
            client.hset(small, field, value)
            client.expireat(small, expire_at)
            filt = f"{index.base}:f:{gen}"
            client.setbit(filt, int.from_bytes(field[3:7], "big") % config.filter_bits, 1)
            client.expireat(filt, expire_at)
        client.delete(key)


@pytest.mark.parametrize(
    ("move", "layouts"),
    [(to_previous_layout, "kd"), (to_one_field_tables, "td"), (to_own_doc_hashes, "d")],
)
def test_copies_indexed_by_a_previous_layout_are_still_found(
    redis_client: redis.Redis,
    settings: Settings,
    move: Callable[[redis.Redis, DedupIndex], None],
    layouts: str,
) -> None:
    old = DedupIndex(redis_client, settings)
    stories = GOLD[30:36]
    firsts = [put(old, url, text) for url, text in stories]
    move(redis_client, old)
    index = DedupIndex(redis_client, settings)  # a worker of the new version
    assert index.legacy() == layouts
    rng = random.Random(3)
    for (url, text), first in zip(stories, firsts, strict=True):
        assert put(index, url, text) == first  # a replay: the first verdict again
        exact = put(index, f"{url}?copy=exact", text.upper())
        near = put(index, f"https://wire.example/{first.story_id}", edit(text, "credit", rng)[0])
        for verdict in (exact, near):
            assert verdict.story_id == first.story_id and verdict.duplicate_of == url
    fresh_url, fresh_text = GOLD[40]
    fresh = put(index, fresh_url, fresh_text)  # new ones go to the table, found as ever
    assert put(index, "https://copy.example/x", fresh_text).story_id == fresh.story_id


def test_text_and_band_entries_are_packed_a_few_bytes_each(
    redis_client: redis.Redis, settings: Settings
) -> None:
    """Issue 18: one field per entry made the table a full hash, ~60 bytes an entry
    (2.1 KB an article with its doc record, 0.8 KB before the table). With the doc
    records in 64 hashes of their own beside it, ~795 bytes an article in all on the
    tests' Redis; in the table, ~750."""
    settings = dataclasses.replace(settings, dedup_capacity=400)
    index = DedupIndex(redis_client, settings)
    texts = [f"{text}\n\nEdition {n}: {' '.join(f'w{n}x{k}' for k in range(40))}."
             for n, (_, text) in enumerate(GOLD[:100])]  # fmt: skip
    for n, text in enumerate(texts):
        put(index, f"https://outlet.example/{n}", text)
    keys = list(redis_client.scan_iter(match=f"{index.base}:*"))
    used = sum(redis_client.memory_usage(key, samples=0) or 0 for key in keys)
    # 26 entries an article at under 20 bytes each, and its doc record of ~250 bytes
    assert used / len(texts) < 780, used / len(texts)


def test_without_the_previous_layout_the_index_does_not_look_for_it(
    redis_client: redis.Redis, settings: Settings
) -> None:
    index = DedupIndex(redis_client, settings)
    put(index, *GOLD[50])
    assert not index.legacy()
