"""The dedup decision made in the worker (newsq/dedup/decision.py) against the one in
Redis (dedup.lua): the same verdicts and the same entries written, on real gold texts;
and its commit refuses what changed under it, on a real Redis."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import redis

from newsq.config.settings import Settings
from newsq.dedup.decision import Copy
from newsq.dedup.index import DedupIndex
from newsq.demo.dedup_eval import EDITS, edit, gold_texts
from newsq.records import Verdict

GOLD = gold_texts()
NOW = time.time()  # one clock for both indexes: their generations agree


class ScriptOnly(DedupIndex):
    """Every decide by dedup.lua, as before the decision moved to the worker."""

    def decide_here(self, c: Copy) -> Verdict | None:
        return None


def put(index: DedupIndex, url: str, text: str, final: str | None = None,
        canonical: str | None = None) -> Verdict:  # fmt: skip
    return index.decide(url=url, final_url=final or url, canonical_url=canonical,
                        text=text, site=None)  # fmt: skip


def copies() -> list[tuple[str, str, str | None, str | None]]:
    """A stream of every kind of copy: firsts, edited copies, replays, revisions, url
    aliases, exact copies elsewhere, empty texts."""
    rng = random.Random(7)
    out: list[tuple[str, str, str | None, str | None]] = []
    for n, (url, text) in enumerate(GOLD[:40]):
        out.append((url, text, None, None))
        kind = EDITS[n % len(EDITS)]
        out.append((f"https://copy{n}.example/a", edit(text, kind, rng)[0], None, None))
        if n % 3 == 0:
            out.append((url, text, None, None))  # a replay
        if n % 5 == 1:
            out.append((url, GOLD[n + 50][1], None, None))  # a revision
        if n % 4 == 2:
            out.append((f"https://amp{n}.example/x", text, None, url))  # canonical
            out.append((f"https://r{n}.example/y", text[: len(text) // 2], url, None))
        if n % 6 == 3:
            out.append((f"https://wire{n}.example/z", text.upper(), None, None))  # exact
        if n % 10 == 4:
            out.append((f"https://empty{n}.example/", "", None, None))
    return out


def tables(client: redis.Redis, index: DedupIndex) -> dict[bytes, Any]:
    base = index.base.encode()
    out = {}
    for key in client.scan_iter(match=f"{index.base}:*"):
        kind = client.type(key)
        value = client.hgetall(key) if kind == b"hash" else client.get(key)
        out[key[len(base) :]] = value
    return out


def test_the_worker_decides_and_writes_as_the_script_does(
    redis_client: redis.Redis, settings: Settings
) -> None:
    here = DedupIndex(redis_client, settings, clock=lambda: NOW)
    other = replace(settings, key_prefix=settings.key_prefix + "s")
    script = ScriptOnly(redis_client, other, clock=lambda: NOW)
    try:
        stream = copies()
        got = [put(here, *c) for c in stream]
        want = [put(script, *c) for c in stream]
        assert got == want
        kinds = {v.kind for v in got}
        assert kinds == {"new", "near", "exact", "url", "revision"}, kinds
        assert tables(redis_client, here) == tables(redis_client, script)
    finally:
        for key in redis_client.scan_iter(match=f"{script.base}:*"):
            redis_client.delete(key)


class Racing(DedupIndex):
    """Lets another worker decide ``then`` between this one's reads and its commit."""

    def __init__(self, *args: Any, then: tuple[DedupIndex, str, str], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.then: tuple[DedupIndex, str, str] | None = then
        self.commits = 0
        self.their: Verdict | None = None
        real = self.commit

        def commit(**kw: Any) -> Any:
            self.commits += 1
            if self.then:
                index, url, text = self.then
                self.then = None
                self.their = put(index, url, text)
            return real(**kw)

        self.commit = commit  # type: ignore[assignment]


def test_a_copy_decided_meanwhile_makes_the_commit_decide_again(
    redis_client: redis.Redis, settings: Settings
) -> None:
    (url, text), rng = GOLD[3], random.Random(1)
    copy = edit(text, "credit", rng)[0]
    other = DedupIndex(redis_client, settings)
    racing = Racing(redis_client, settings, then=(other, "https://b.example/1", copy))
    mine = put(racing, url, text)
    # both read an empty index; the other committed first, so this one decided again
    assert racing.their is not None and racing.their.kind == "new"
    assert racing.commits == 2
    assert (mine.kind, mine.story_id) == ("near", racing.their.story_id)
    assert put(racing, url, text) == mine  # and filed it: a replay agrees


def test_an_unrelated_entry_appended_meanwhile_lets_the_commit_through(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # a capacity of one article: the whole generation's entries share one packed field
    tiny = replace(settings, dedup_capacity=1)
    other = DedupIndex(redis_client, tiny)
    (url, text), (url2, text2) = GOLD[5], GOLD[6]
    racing = Racing(redis_client, tiny, then=(other, url2, text2))
    assert racing.config.table_buckets == 1
    mine = put(racing, url, text)
    assert racing.their is not None and racing.their.kind == "new"
    assert (mine.kind, racing.commits) == ("new", 1)
    assert mine.story_id != racing.their.story_id
    # neither entry lost the other: each copy elsewhere is found as an exact copy
    assert put(other, "https://x.example/1", text).story_id == mine.story_id
    assert put(other, "https://x.example/2", text2).story_id == racing.their.story_id


def test_a_url_revised_meanwhile_makes_the_commit_decide_again(
    redis_client: redis.Redis, settings: Settings
) -> None:
    (url, text), (_, text2), (_, text3) = GOLD[8], GOLD[9], GOLD[10]
    other = DedupIndex(redis_client, settings)
    first = put(other, url, text)
    racing = Racing(redis_client, settings, then=(other, url, text2))  # revised first
    mine = put(racing, url, text3)
    assert racing.their is not None and racing.their.kind == "revision"
    assert racing.commits == 2  # its url record had changed: decided again
    assert (mine.kind, mine.story_id) == ("revision", first.story_id)
    assert put(other, url, text3) == mine  # filed: a replay agrees
