"""Fresh news first: bulk input waits in its own lane of each queue, and a real worker
takes a fresh URL before the backlog, losing nothing and fetching nothing twice."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import redis

import newsq
from newsq.config.celery import BULK, FRESH, queue_keys
from newsq.config.settings import Settings
from newsq.feeds.send import FRESH_MOST, lane_for
from newsq.fetch.politeness import fetch_tag
from newsq.ledger import Ledger
from newsq.records import TERMINAL
from tests.cli import local_env
from tests.faults.site import Site, serve
from tests.processes import running


def lanes(client: redis.Redis, prefix: str) -> dict[int, list[str]]:
    """The URLs of the fetch messages waiting in each lane."""
    out: dict[int, list[str]] = {}
    for lane, key in zip((FRESH, BULK), queue_keys(prefix, "fetch"), strict=True):
        urls: list[str] = []
        for raw in reversed(client.lrange(key, 0, -1)):  # oldest first
            arg = json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
            urls += arg if isinstance(arg, list) else [arg]
        out[lane] = urls
    return out


def test_the_rule_bulk_for_files_reruns_and_backlogs() -> None:
    assert lane_for(1) == lane_for(FRESH_MOST) == FRESH
    assert lane_for(FRESH_MOST + 1) == BULK
    assert lane_for(1, bulk=True) == BULK


def test_a_url_file_and_a_backlog_go_bulk_single_urls_fresh(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    listed = tmp_path / "urls.txt"
    listed.write_text("https://news.example/file/1\nhttps://news.example/file/2\n")
    newsq.enqueue(url_files=[str(listed)], settings=settings)
    newsq.enqueue("https://news.example/breaking", settings=settings)
    many = [f"https://news.example/archive/{n}" for n in range(FRESH_MOST + 1)]
    newsq.enqueue(many, settings=settings)
    waiting = lanes(redis_client, settings.key_prefix)
    assert waiting[FRESH] == ["https://news.example/breaking"]
    assert waiting[BULK] == ["https://news.example/file/1", "https://news.example/file/2", *many]


def test_a_worker_takes_the_fresh_url_before_the_backlog(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with serve(Site(stories=61, copies=0, missing=0).build()) as site:
        backlog, breaking = site.urls[:60], site.urls[60]
        listed = tmp_path / "backlog.txt"
        listed.write_text("\n".join(backlog))
        newsq.enqueue(url_files=[str(listed)], settings=settings)
        env = local_env(settings.broker_url or "", settings.key_prefix, settings.database_url)
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
               "--pool", "threads", "--concurrency", "2"]  # fmt: skip
        ledger = Ledger(redis_client, settings.key_prefix)
        with running(cmd, env, tmp_path / "worker.log") as proc:
            deadline = time.monotonic() + 60
            while not site.requests and time.monotonic() < deadline:
                time.sleep(0.1)  # the worker is into the backlog
            newsq.enqueue(breaking, settings=settings)
            assert newsq.wait([breaking], timeout=60, settings=settings)[breaking] == "stored"
            done = sum(state in TERMINAL for state in ledger.states(backlog))
            # ahead of it only what the worker had taken already (2 threads, prefetch)
            assert done <= 10, f"{done} of the backlog were done first"
            states = newsq.wait(backlog, timeout=120, settings=settings)
            assert proc.poll() is None
    assert set(states.values()) == {"stored"}  # nothing lost
    assert max(site.requests.values()) == 1  # nothing fetched twice
    assert lanes(redis_client, settings.key_prefix) == {FRESH: [], BULK: []}


def test_a_fetched_url_goes_on_to_the_process_stage_in_its_lane(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with serve(Site(stories=3, copies=0, missing=0).build()) as site:
        backlog, breaking = site.urls[:2], site.urls[2]
        listed = tmp_path / "backlog.txt"
        listed.write_text("\n".join(backlog))
        newsq.enqueue(url_files=[str(listed)], settings=settings)
        newsq.enqueue(breaking, settings=settings)
        env = local_env(settings.broker_url or "", settings.key_prefix, settings.database_url)
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch",
               "--pool", "threads", "--concurrency", "2"]  # fmt: skip
        ledger = Ledger(redis_client, settings.key_prefix)
        with running(cmd, env, tmp_path / "worker.log"):  # fetches only: hands pages on
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if ledger.states([*backlog, breaking]) == ["fetched"] * 3:
                    break
                time.sleep(0.1)
    fresh, bulk = queue_keys(settings.key_prefix, "process")
    assert redis_client.llen(fresh) == 1 and redis_client.llen(bulk) == 2


def test_a_fetch_put_off_until_its_hosts_turn_keeps_its_lane(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with serve(Site(stories=4, copies=0, missing=0).build()) as site:
        listed = tmp_path / "backlog.txt"
        listed.write_text("\n".join(site.urls))
        newsq.enqueue(url_files=[str(listed)], settings=settings)
        env = local_env(settings.broker_url or "", settings.key_prefix, settings.database_url)
        env["NEWSQ_HOST_RATE"] = "0.2"  # one request per 5 s: the others wait their turn
        cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch",
               "--pool", "threads", "--concurrency", "4"]  # fmt: skip
        host = site.base.split("://", 1)[1]
        fresh, bulk = (f"{fetch_tag(settings.key_prefix)}:frontier:{host}:{lane}"
                       for lane in (FRESH, BULK))  # fmt: skip
        waiting: list[bytes] = []
        with running(cmd, env, tmp_path / "worker.log"):
            deadline = time.monotonic() + 60
            while len(waiting) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
                waiting = redis_client.lrange(bulk, 0, -1)  # type: ignore[assignment]
    assert len(waiting) >= 3  # waiting in the frontier, in the host's bulk lane
    assert redis_client.llen(fresh) == 0
