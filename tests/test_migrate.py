"""An upgrade loses nothing: the state as the version before 3792093/0efc6b9 wrote it
(its own Lua, read from git, called as its Python called it) is moved to
today's keys, once however many workers start together, and a worker of today fetches
and stores the URLs that waited in the old frontier."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from functools import cache
from pathlib import Path

import pytest
import redis

from newsq.config.settings import Settings
from newsq.connections import state_redis
from newsq.fetch.frontier import Frontier
from newsq.fetch.politeness import Politeness, crawl_delay_key, fetch_tag
from newsq.ledger import Ledger
from newsq.migrate import Moved, upgrade
from newsq.records import TERMINAL
from newsq.replies import text
from newsq.urls import url_id
from newsq.workers.embedded import state_folder
from newsq.workers.redis_server import KeptRedis
from tests.cli import local_env, newsq_env, run_newsq
from tests.cluster_server import LocalCluster
from tests.faults.site import Site, serve
from tests.processes import running
from tests.test_cluster import cluster_prefix  # noqa: F401 (a fixture)

BEFORE = "8a03fc9"
"""The commit before the layout of today: its scripts write the state of before."""


@cache
def script_before(path: str) -> str:
    """``path`` as it was at :data:`BEFORE` (a clone without that history skips)."""
    shown = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=Path(__file__).parent,
                           capture_output=True, text=True)  # fmt: skip
    if shown.returncode:
        pytest.skip(f"no git history of {BEFORE} here to write the state of before with")
    return shown.stdout


HOST = "old.example"


class OldState:
    """The state as commit 8a03fc9 wrote it: its ledger, frontier and politeness."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.tag = f"{{{prefix}}}"
        self.ledger = client.register_script(script_before("newsq/ledger.lua"))
        grant = script_before("newsq/fetch/grant.lua")
        self.frontier = client.register_script(grant + script_before("newsq/fetch/frontier.lua"))

    def key(self, url: str) -> str:
        return f"{self.tag}:url:{url_id(url)}"

    @property
    def counters(self) -> list[str]:
        return [f"{self.tag}:counts", f"{self.tag}:active", f"{self.tag}:reasons"]

    def enqueue(self, *urls: str) -> None:
        keys = [*self.counters[:2], *(self.key(u) for u in urls)]
        self.ledger(keys=keys, args=["enqueue", repr(time.time()), *urls])

    def move(self, url: str, state: str, **fields: str) -> None:
        args: list[str | float] = ["move", state, time.time(), "0", 86400, url]
        for name, value in fields.items():
            args += [name, value]
        self.ledger(keys=[self.key(url), *self.counters], args=args)

    def park(self, host: str, url: str, rate: float) -> bool:
        """Frontier.offer of before: True when granted at once (fetched, not queued)."""
        args: list[str | int] = ["park", self.prefix, host, f"{rate:g}", 4, uuid.uuid4().hex,
                                 65, 0, 0, url, "0"]  # fmt: skip
        return bool(int(self.frontier(args=args)))

    def dispatch_unsent(self, most: int) -> int:
        """A dispatcher of before takes ``most`` URLs and dies before sending them."""
        args: list[str | int] = ["dispatch", self.prefix, "old-holder", 5000, most, 65, "seed",
                                 1, 0, 1]  # fmt: skip
        return len(self.frontier(args=args)) - 2

    def set_rate(self, host: str, rate: float) -> None:
        self.client.hset(f"{self.prefix}:polite:rates", host, f"{rate:g}")

    def counts(self) -> dict[str, int]:
        raw = self.client.hgetall(f"{self.tag}:counts")
        return {text(k): int(v) for k, v in raw.items() if int(v)}

    def reasons(self) -> dict[str, int]:
        raw = self.client.hgetall(f"{self.tag}:reasons")
        return {text(k): int(v) for k, v in raw.items() if int(v)}


def old_state(client: redis.Redis, prefix: str, host: str, parked: list[str]) -> OldState:
    """A state of before with URLs in every place: stored, failed, one stored whose
    entry expired, one in progress, and ``parked`` waiting in ``host``'s queue (one of
    them taken by a dispatcher that never sent it)."""
    old = OldState(client, prefix)
    done = ["https://news.example/a", "https://news.example/b", "https://news.example/gone"]
    old.enqueue(*done, "https://news.example/busy", *parked)
    old.move(done[0], "stored", story_id="s1")
    old.move(done[1], "failed", reason="http_error")
    old.move(done[2], "stored")
    client.delete(old.key(done[2]))  # its retention's EXPIRE: only the counts remember it
    old.move("https://news.example/busy", "fetching")
    assert old.park(host, parked[0], rate=1.0)  # granted: its host's rate time is taken
    old.move(parked[0], "stored")
    assert not any(old.park(host, url, rate=1.0) for url in parked[1:])
    time.sleep(1.1)  # the host is due again: a dispatcher of before takes one, dies
    assert old.dispatch_unsent(most=1) == 1
    old.set_rate(HOST, 0.5)
    client.set(f"{prefix}:polite:crawl-delay:{HOST}", "3.000000", ex=600)
    return old


def old_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    found = [*client.scan_iter(match=f"{{{prefix}}}:url:*"),
             *client.scan_iter(match=f"{prefix}:*")]  # fmt: skip
    found += [k for k in (f"{{{prefix}}}:counts", f"{{{prefix}}}:active",
                          f"{{{prefix}}}:reasons") if client.exists(k)]  # fmt: skip
    return found


def test_every_url_of_before_is_known_counted_and_waiting_after_the_move(
    redis_client: redis.Redis, settings: Settings
) -> None:
    prefix = settings.key_prefix
    parked = [f"https://{HOST}/story/{n}" for n in range(4)]
    old = old_state(redis_client, prefix, HOST, parked)
    counts, reasons = old.counts(), old.reasons()
    assert counts == {"stored": 3, "failed": 1, "fetching": 1, "queued": 3}

    moved = upgrade(redis_client, prefix)

    assert moved == Moved(entries=7, waiting=3, keys=moved.keys if moved else 0)
    ledger = Ledger(redis_client, prefix)
    assert {s: n for s, n in ledger.counts().items() if n} == counts
    assert ledger.reasons() == reasons == {"failed:http_error": 1}
    assert (ledger.get("https://news.example/a") or {}).get("story_id") == "s1"
    assert (ledger.get("https://news.example/b") or {}).get("reason") == "http_error"
    assert 0 < redis_client.ttl(ledger.key("https://news.example/a")) <= 86400
    assert redis_client.ttl(ledger.key(parked[1])) == -1  # in flight: no expiry
    stuck = sorted(url for url, _, _ in ledger.stuck(0.0))
    assert stuck == sorted(["https://news.example/busy", *parked[1:]])
    frontier = Frontier(redis_client, Politeness(redis_client, settings))
    assert frontier.waiting() == {HOST: 3}
    waiting = [redis_client.lrange(frontier.queue_key(HOST, 0), 0, -1)]
    assert [text(e).split("|", 2)[2] for e in waiting[0]] == parked[1:]  # in their order
    tag = fetch_tag(prefix)  # an operator's rate and a robots.txt's Crawl-delay stay
    assert redis_client.hget(f"{tag}:polite:rates", HOST) == b"0.5"
    assert 0 < redis_client.ttl(crawl_delay_key(prefix, HOST)) <= 600
    assert old_keys(redis_client, prefix) == []

    assert upgrade(redis_client, prefix) is None  # once: nothing left to move
    assert {s: n for s, n in ledger.counts().items() if n} == counts


def test_workers_starting_together_move_the_keys_once(
    redis_url: str, redis_client: redis.Redis, settings: Settings
) -> None:
    prefix = settings.key_prefix
    old = old_state(redis_client, prefix, HOST, [f"https://{HOST}/s/{n}" for n in range(3)])
    counts = old.counts()
    results: list[Moved | None] = []
    start = threading.Barrier(8)

    def worker() -> None:
        client = redis.Redis.from_url(redis_url)
        start.wait()
        results.append(upgrade(client, prefix))
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for r in results if r is not None) == 1
    ledger = Ledger(redis_client, prefix)
    assert {s: n for s, n in ledger.counts().items() if n} == counts
    assert sum(Frontier(redis_client, Politeness(redis_client, settings)).waiting().values()) == 2


def test_a_move_cut_short_is_finished_by_the_next_without_counting_twice(
    redis_client: redis.Redis, settings: Settings
) -> None:
    prefix = settings.key_prefix
    old = old_state(redis_client, prefix, HOST, [f"https://{HOST}/s/{n}" for n in range(3)])
    counts = old.counts()
    # an entry written to its bucket by a worker that died before deleting the old one
    url = "https://news.example/busy"
    fields = redis_client.hgetall(old.key(url))
    ledger = Ledger(redis_client, prefix)
    bucket = ledger.bucket(url)
    redis_client.hset(ledger.key(url), mapping=fields)  # type: ignore[arg-type]
    redis_client.hincrby(bucket.counts, "fetching", 1)
    upgrade(redis_client, prefix)
    assert {s: n for s, n in ledger.counts().items() if n} == counts


@pytest.mark.slow
def test_a_worker_of_today_fetches_and_stores_what_waited_in_the_old_frontier(
    redis_client: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    prefix = settings.key_prefix
    with serve(Site(stories=4, copies=0, missing=0).build()) as site:
        host = site.base.split("://", 1)[1]
        parked = list(site.urls)
        old = OldState(redis_client, prefix)
        old.enqueue(*parked)
        assert old.park(host, parked[0], rate=5.0)
        old.move(parked[0], "stored")
        assert not any(old.park(host, url, rate=5.0) for url in parked[1:])
        env = local_env(settings.broker_url or "", prefix, settings.database_url)
        cmd = [sys.executable, "-m", "newsq", "worker", "--pool", "threads",
               "--concurrency", "4"]  # fmt: skip
        ledger = Ledger(redis_client, prefix)
        states: list[str | None] = []
        with running(cmd, env, tmp_path / "worker.log"):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                states = ledger.states(parked[1:])
                if all(s in TERMINAL for s in states):
                    break
                time.sleep(0.3)
    log = (tmp_path / "worker.log").read_text()
    assert states == ["stored"] * 3, log
    assert "moved the Redis keys of before" in log
    export = subprocess.run([sys.executable, "-m", "newsq", "export"], env=env, text=True,
                            capture_output=True, timeout=60, check=True)  # fmt: skip
    assert all(url in export.stdout for url in parked[1:])


def test_on_a_cluster_the_ledger_moves_from_its_one_slot_to_the_buckets(
    redis_cluster: LocalCluster,
    cluster_prefix: str,  # noqa: F811
    redis_url: str,
) -> None:
    client = state_redis(Settings(broker_url=redis_url, state_url=redis_cluster.url))
    old = OldState(client, cluster_prefix)  # the ledger of before: keys of one tag, one slot
    urls = [f"https://news.example/{n}" for n in range(40)]
    old.enqueue(*urls)
    for url in urls[:25]:
        old.move(url, "stored")
    old.move(urls[25], "skipped", reason="robots_disallowed")
    counts = old.counts()
    moved = upgrade(client, cluster_prefix)
    assert moved is not None and moved.entries == 40
    ledger = Ledger(client, cluster_prefix)
    assert {s: n for s, n in ledger.counts().items() if n} == counts
    assert ledger.reasons() == {"skipped:robots_disallowed": 1}
    assert ledger.states(urls) == ["stored"] * 25 + ["skipped"] + ["queued"] * 14
    assert not client.exists(f"{{{cluster_prefix}}}:counts")
    client.close()


@pytest.mark.slow
def test_newsq_run_on_a_state_kept_by_the_version_before_resumes_its_urls(
    tmp_path: Path,
) -> None:
    """A run interrupted under the version before left URLs queued in its kept Redis:
    the next run of today finds them (after the move) and sends them again."""
    env = newsq_env(NEWSQ_ALLOW_PRIVATE="1", NEWSQ_HOST_RATE="0", NEWSQ_ROBOTS="0")
    with serve(Site(stories=3, copies=0, missing=0).build()) as site:
        first, *left = site.urls
        assert run_newsq("run", first, env=env, cwd=str(tmp_path)).returncode == 0
        folder = state_folder(f"sqlite:///{tmp_path / 'newsq.db'}")
        assert folder is not None
        kept = KeptRedis(folder, "test")
        kept.lock(on_wait=lambda _owner: None)
        client = redis.Redis.from_url(kept.start())
        OldState(client, "newsq").enqueue(*left)  # what the version before left queued
        client.close()
        kept.stop()
        again = run_newsq("run", first, env=env, cwd=str(tmp_path))
    assert f"resuming {len(left)} URLs" in again.stderr, again.stderr
    for url in left:
        status = run_newsq("status", url, env=env, cwd=str(tmp_path))
        assert json.loads(status.stdout)["state"] == "stored", status.stdout
