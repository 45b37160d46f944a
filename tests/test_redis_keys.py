"""Redis stays bounded: every key newsq writes expires, or is one the README says is
bounded by something else ("What newsq keeps in Redis")."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from newsq.config.celery import queue_keys
from newsq.ledger import Ledger
from tests.cli import local_env
from tests.faults.site import Site, serve

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

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


@dataclass(frozen=True)
class Row:
    """One key pattern of the README's table."""

    shown: str
    """as the README writes it: the default prefix `newsq`, `<part>` for any text"""
    forever: bool
    """its expiry cell begins "no expiry"."""

    def matches(self, key: str, prefix: str) -> bool:
        parts = re.split(r"<[^>]+>", self.shown.replace("newsq", "\0", 1))
        pattern = ".+".join(re.escape(p) for p in parts).replace("\0", re.escape(prefix))
        return re.fullmatch(pattern, key) is not None


def readme_rows() -> list[Row]:
    """The README's table of Redis keys, one Row per key pattern."""
    section = README.split("\n## What newsq keeps in Redis\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            forever = cells[3].startswith("no expiry")
            rows += [Row(shown, forever) for shown in re.findall(r"`([^`]+)`", cells[0])]
    return rows


def row_of(key: str, prefix: str, rows: list[Row]) -> Row | None:
    return next((row for row in rows if row.matches(key, prefix)), None)


def _keys(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Every key of ``prefix`` and its TTL (-1: none)."""
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    ttls = pipe.execute()
    return {k.decode(): int(t) for k, t in zip(keys, ttls, strict=True) if t != -2}  # -2: gone


def test_the_readme_table_reads_as_patterns() -> None:
    rows = readme_rows()
    assert len(rows) >= 25
    assert row_of("p:q:fetch", "p", rows) == Row("newsq:q:fetch", True)
    assert row_of("{p:l:3.53}:url:0a1b", "p", rows) == Row("{newsq:l:<bucket>}:url:<id>", False)
    assert row_of("p:bp:{127.0.0.1:80}:g:20", "p", rows) == Row("newsq:bp:{<site>}:g:<gen>", False)
    assert row_of("p:q:fetch:x", "p", rows) is None
    bulk = queue_keys("p", "fetch")[1]  # the queue's bulk lane, named with kombu's separator
    assert row_of(bulk, "p", rows) == Row("newsq:q:fetch<sep>9", True)
    assert row_of("{p:l:3}:url:0a1b", "q", rows) is None


@pytest.mark.slow
def test_a_run_leaves_no_key_without_a_bound(
    redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    """A small split-layout run, robots.txt and politeness on: every key it makes is in
    the README's table, and every key left after it expires unless its row says not."""
    built = Site(stories=6, copies=2, missing=1).build()
    built.pages["/robots.txt"] = b"User-agent: *\nCrawl-delay: 0.01\n"
    env = {**local_env(redis_url, key_prefix, sqlite_url), "NEWSQ_ROBOTS": "1",
           "NEWSQ_HOST_RATE": "200"}  # fmt: skip
    rows = readme_rows()
    client = redis.Redis.from_url(redis_url)
    during: dict[str, int] = {}
    with serve(built) as site:
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join(site.urls) + "\n")
        err = tmp_path / "stderr"
        with err.open("w") as stderr:
            run = subprocess.Popen(
                [sys.executable, "-m", "newsq", "run", "--urls", str(listing), "--workers", "1",
                 "--layout", "split"],
                env=env, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
            while run.poll() is None:  # keys that live only while the run goes on, too
                during.update(_keys(client, key_prefix))
                time.sleep(0.1)
    assert run.returncode == 0, err.read_text()
    left = _keys(client, key_prefix)
    client.close()

    found = {key: row_of(key, key_prefix, rows) for key in {*during, *left}}
    assert sorted(k for k, row in found.items() if row is None) == [], "not in the README"
    unbounded = [k for k, ttl in left.items() if ttl == -1 and not found[k].forever]  # type: ignore[union-attr]
    assert sorted(unbounded) == [], "no expiry, though its README row gives one"
    shown = {row.shown for row in found.values() if row is not None}
    assert {"{newsq:l:<bucket>}:url:<id>", "{newsq}:tput:<minute>",
            "{newsq:fetch}:polite:next:<host>", "{newsq:fetch}:polite:crawl-delay:<host>",
            "newsq:robots:<origin>",
            "newsq:bp:{<site>}:g:<gen>", "{newsq:dedup}:b:<gen>",
            "newsq:q:unacked", "newsq:q:_kombu.binding.<exchange>"} <= shown  # fmt: skip
