"""The shared state on a real Redis Cluster of three masters (``redis+cluster://``):
every call's keys on one slot, the ledger spread over the masters, and a whole run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from newsq.config.settings import Settings
from newsq.connections import state_redis
from newsq.errors import ConfigError
from newsq.ledger import Ledger
from newsq.workers.redis_server import free_port
from tests.cli import local_env, run_newsq
from tests.cluster_server import LocalCluster
from tests.faults.site import Site, serve
from tests.test_redis_keys import readme_rows, row_of


@pytest.fixture
def cluster_prefix(redis_cluster: LocalCluster) -> Iterator[str]:
    """A key prefix of this test's own on the cluster; its keys are deleted afterwards."""
    prefix = f"nqc{uuid.uuid4().hex[:10]}"
    yield prefix
    for port in redis_cluster.ports:
        node = redis_cluster.client(port)
        for key in list(node.scan_iter(match=f"*{prefix}*", count=1000)):
            node.delete(key)
        node.close()


def _keys_by_master(cluster: LocalCluster, prefix: str) -> dict[int, dict[str, int]]:
    """Each master's keys of ``prefix`` and their TTLs (-1: none)."""
    out = {}
    for port in cluster.ports:
        node = cluster.client(port)
        keys = [k.decode() for k in node.scan_iter(match=f"*{prefix}*", count=1000)]
        out[port] = {key: int(node.ttl(key)) for key in keys}
        node.close()
    return out


def test_a_cluster_url_gives_a_cluster_client(redis_cluster: LocalCluster) -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", state_url=redis_cluster.url)
    client = state_redis(settings)
    assert isinstance(client, RedisCluster)
    assert len(client.get_primaries()) == 3
    client.close()
    env = {"NEWSQ_BROKER_URL": "redis://b:6379/0"}
    parsed = Settings.from_env({**env, "NEWSQ_STATE_URL": "redis+cluster://a:7000,b:7001"})
    assert parsed.state_url == "redis+cluster://a:7000,b:7001"
    for bad, why in (("redis+cluster://a:7000/2", "only database 0"),
                     ("redis+cluster://a", "is not HOST:PORT"),
                     ("redis+cluster://:secret@a:0", "port must be 1 to 65535")):  # fmt: skip
        with pytest.raises(ConfigError, match=why) as raised:
            Settings.from_env({**env, "NEWSQ_STATE_URL": bad})
        assert "secret" not in str(raised.value)
    with pytest.raises(ConfigError, match="NEWSQ_BROKER_URL"):  # kombu takes no cluster
        Settings.from_env({"NEWSQ_BROKER_URL": "redis+cluster://a:7000"})


def test_a_redis_url_of_a_cluster_node_gives_a_cluster_client(
    redis_cluster: LocalCluster, redis_url: str
) -> None:
    """Told by the node's INFO (``cluster_enabled:1``); a plain server, or one that
    cannot be asked, keeps a plain client."""
    node = f"redis://127.0.0.1:{redis_cluster.ports[1]}/0"
    client = state_redis(Settings(broker_url=redis_url, state_url=node))
    assert isinstance(client, RedisCluster) and len(client.get_primaries()) == 3
    client.close()
    for url in (redis_url, f"redis://127.0.0.1:{free_port()}/0"):
        plain = state_redis(Settings(broker_url=redis_url, state_url=url))
        assert isinstance(plain, redis.Redis)
        plain.close()
    broker_only = state_redis(Settings(broker_url=node))  # the state on the broker: no asking
    assert isinstance(broker_only, redis.Redis)


def test_a_cluster_that_cannot_be_reached_is_one_line(redis_url: str, tmp_path: Path) -> None:
    """redis-py's RedisClusterException is no RedisError: newsq says it as one."""
    nowhere = f"redis+cluster://127.0.0.1:{free_port()}"
    env = {**local_env(redis_url, "nqc-none", f"sqlite:///{tmp_path}/s.db"),
           "NEWSQ_STATE_URL": nowhere}  # fmt: skip
    done = run_newsq("stats", "--once", env=env, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot reach Redis: Redis Cluster unreachable" in done.stderr


def test_the_ledger_spreads_over_the_masters_and_reads_as_one(
    redis_cluster: LocalCluster, cluster_prefix: str
) -> None:
    client = state_redis(Settings(broker_url="redis://x:1/0", state_url=redis_cluster.url))
    ledger = Ledger(client, cluster_prefix, retention_days=1)
    urls = [f"https://news.example/{i}" for i in range(300)]
    assert ledger.enqueue([*urls, urls[0]]) == [True] * 300 + [False]  # one call a bucket
    assert ledger.enqueue(urls[:5], recorded=lambda claimed: set(claimed)) == [False] * 5
    for url in urls[:40]:
        ledger.begin(url, "fetching")
    ledger.note_many({url: {"last_error": "timeout"} for url in urls[:40]})
    for url in urls[:30]:
        ledger.move(url, "failed", reason="timeout")
    ledger.move(urls[30], "stored", story_id="s")
    assert (ledger.get(urls[35]) or {})["last_error"] == "timeout"
    counts = ledger.counts()
    assert (counts["queued"], counts["fetching"], counts["failed"], counts["stored"]) == (
        260, 9, 30, 1)  # fmt: skip
    assert ledger.ended() == 31 and ledger.reasons() == {"failed:timeout": 30}
    assert {u for u, _, _ in ledger.stuck(0, limit=1000)} == set(urls[31:])
    # the longest waiting: one never taken, not one taken since (31 to 39)
    assert next(u for u, _, _ in ledger.stuck(0, limit=1)) in urls[40:]
    ledger.add_dead(urls[0])
    assert ledger.dead() == [urls[0]]
    ledger.flush()
    by_master = _keys_by_master(redis_cluster, cluster_prefix)
    per_master = {p: len(k) for p, k in by_master.items()}
    scanned = {k.decode() for k in client.scan_iter(match=f"*{cluster_prefix}*", count=1000)}
    assert scanned == {k for keys in by_master.values() for k in keys}  # every master's
    entries = Counter(ledger.key(u) for u in urls)
    assert len(entries) == 300 and all(n > 60 for n in per_master.values()), per_master
    client.close()


def _move_slot(cluster: LocalCluster, slot: int, to_port: int) -> None:
    """Hand an empty slot to the master on ``to_port`` (every node told)."""
    target = cluster.client(to_port)
    node_id = target.execute_command("CLUSTER MYID")
    target.close()
    for port in [to_port, *(p for p in cluster.ports if p != to_port)]:
        node = cluster.client(port)
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", node_id)
        node.close()


def test_a_call_whose_slot_moved_goes_again_where_it_now_is(
    redis_cluster: LocalCluster, cluster_prefix: str
) -> None:
    """An enqueue's calls go to each master in a pipeline of its own, by the slots the
    client last learnt; a slot moved since answers MOVED and its call is sent again."""
    client = state_redis(Settings(broker_url="redis://x:1/0", state_url=redis_cluster.url))
    ledger = Ledger(client, cluster_prefix)
    bucket = ledger.buckets[0]
    slot = key_slot(bucket.counts.encode())
    owner = client.get_node_from_key(bucket.counts).port  # type: ignore[attr-defined]
    other = next(p for p in redis_cluster.ports if p != owner)
    urls = [f"https://news.example/{i}" for i in range(60)]
    mine = [u for u in urls if ledger.bucket(u) == bucket]
    _move_slot(redis_cluster, slot, other)
    try:
        assert ledger.enqueue(urls) == [True] * 60  # the client still thinks `owner`
        assert ledger.counts()["queued"] == 60 and mine
        node = redis_cluster.client(other)
        assert int(node.hget(bucket.counts, "queued") or 0) == len(mine)
        node.close()
    finally:
        for key in [bucket.counts, bucket.active, *(ledger.key(u) for u in mine)]:
            client.delete(key)
        _move_slot(redis_cluster, slot, owner)
        client.close()


@pytest.mark.slow
def test_a_run_with_its_state_on_a_cluster(
    redis_cluster: LocalCluster, cluster_prefix: str, redis_url: str, sqlite_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """``newsq run`` on a plain broker and a three-master cluster for the state, robots
    and politeness on: stories and their copies stored once each, no CROSSSLOT, every
    key the README's, the state on every master, and status and stats read it back."""
    built = Site(stories=8, copies=3, missing=1).build()
    built.pages["/robots.txt"] = b"User-agent: *\nCrawl-delay: 0.01\n"
    env = {**local_env(redis_url, cluster_prefix, sqlite_url), "NEWSQ_ROBOTS": "1",
           "NEWSQ_HOST_RATE": "200", "NEWSQ_STATE_URL": redis_cluster.url}  # fmt: skip
    with serve(built) as site:
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join(site.urls) + "\n")
        done = run_newsq("run", "--urls", str(listing), "--workers", "2", env=env)
        assert done.returncode == 0, done.stderr
        assert "CROSSSLOT" not in done.stderr and "Traceback" not in done.stderr, done.stderr
        status = run_newsq("status", env=env)
        assert status.returncode == 0, status.stderr
        counts = json.loads(status.stdout)
        stats = run_newsq("stats", "--once", env=env)
        assert stats.returncode == 0 and "stored" in stats.stdout, stats.stderr
        one = run_newsq("status", f"{site.base}/copy/1", env=env)
    states = counts["states"]  # the ledger's, summed over its buckets
    assert (states["stored"], states["duplicate"], states["failed"]) == (8, 3, 1), counts
    assert json.loads(one.stdout)["duplicate_of"] == f"{site.base}/story/1", one.stdout
    exported = subprocess.run([sys.executable, "-m", "newsq", "export"], env=env, text=True,
                              capture_output=True, check=True).stdout.splitlines()  # fmt: skip
    assert len(exported) == 8

    keys = _keys_by_master(redis_cluster, cluster_prefix)
    assert all(keys.values()), {p: len(k) for p, k in keys.items()}  # on every master
    rows = readme_rows()
    found = {
        k: (row_of(k, cluster_prefix, rows), ttl) for ks in keys.values() for k, ttl in ks.items()
    }
    assert sorted(k for k, (row, _) in found.items() if row is None) == [], "not in the README"
    unbounded = [k for k, (row, ttl) in found.items() if ttl == -1 and row and not row.forever]
    assert unbounded == [], "no expiry, though its README row gives one"
    assert not [k for ks in keys.values() for k in ks if f"{cluster_prefix}:q:" in k]  # broker's
    broker = redis.Redis.from_url(redis_url)
    assert not [k for k in broker.scan_iter(match=f"*{cluster_prefix}*") if b":q:" not in k]

    retried = run_newsq("retry", f"{site.base}/gone/0", env=env)  # no worker runs now
    assert retried.stdout.strip() == "re-enqueued 1", retried.stderr
    after = json.loads(run_newsq("status", env=env).stdout)["states"]
    assert (after["failed"], after["queued"]) == (0, 1)  # moved, in its bucket
    for key in list(broker.scan_iter(match=f"*{cluster_prefix}*")):  # the retry's message
        broker.delete(key)
    broker.close()
