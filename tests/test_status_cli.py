"""``newsq status`` and ``newsq retry`` through the real CLI, on a real Redis and store.

The URLs are brought to their states by the pipeline's own steps, in process, on a
small local site (no worker needed); the CLI runs as a subprocess, as a user runs it.
What ``retry`` sends is read back from the broker's fetch queue.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from newsq import ledger as ledger_module
from newsq.config.celery import celery_config, queue_keys
from newsq.config.settings import Settings
from newsq.pipeline import fetch_step, process_step, requeue_stuck
from newsq.records import FETCHING
from newsq.resources import Runtime
from tests.faults.site import Site, serve

ROOT = Path(__file__).resolve().parents[1]
# the clean stage loaded at collection: trafilatura's import warns (urllib3 without its
# SOCKS extra), which would be an error inside a test
importlib.import_module("newsq.clean.extract")


@pytest.fixture
def env(redis_url: str, key_prefix: str, sqlite_url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "NEWSQ_BROKER_URL": redis_url,
        "NEWSQ_KEY_PREFIX": key_prefix,
        "NEWSQ_DATABASE_URL": sqlite_url,
        "NEWSQ_ALLOW_PRIVATE": "1",
        "NEWSQ_HOST_RATE": "0",
        "NEWSQ_ROBOTS": "0",
        "NEWSQ_FETCH_TIMEOUT": "5",
    }


@pytest.fixture
def rt(env: dict[str, str]) -> Iterator[Runtime]:
    runtime = Runtime(Settings.from_env(env))
    yield runtime
    runtime.close()


@pytest.fixture
def site() -> Iterator[Site]:
    with serve(Site(stories=2, copies=1, missing=1).build()) as served:
        yield served


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the real CLI; (exit code, stdout). A traceback on stderr fails the test."""
    done = subprocess.run([sys.executable, "-m", "newsq", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def status(env: dict[str, str], *args: str) -> dict[str, Any]:
    code, out = cli(env, "status", *args)
    assert code == 0, out
    out_json: dict[str, Any] = json.loads(out)
    return out_json


def queued_fetches(rt: Runtime) -> list[str]:
    """URLs of the fetch messages waiting on the broker, in either lane."""
    out = []
    keys = queue_keys(rt.settings.key_prefix, "fetch")
    for raw in (raw for key in keys for raw in rt.redis.lrange(key, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == "newsq.fetch"
        out.append(json.loads(base64.b64decode(message["body"]))[0][0])
    return out


def run_pipeline(rt: Runtime, urls: list[str]) -> None:
    rt.ledger.enqueue(urls)
    for url in urls:
        step = fetch_step(rt, url, hand_off=False)
        if step.page is not None:
            process_step(rt, url, step.page)


def test_status_of_stored_duplicate_failed_and_unknown_urls(
    env: dict[str, str], rt: Runtime, site: Site
) -> None:
    first, copy, gone = (site.base + p for p in ("/story/0", "/copy/0", "/gone/0"))
    before = time.time()
    run_pipeline(rt, [first, copy, gone])

    stored = status(env, first)
    assert stored["state"] == "stored" and stored["reason"] is None
    assert stored["duplicate_of"] is None and stored["attempts"] == 1
    times = [datetime.fromisoformat(stored[t]) for t in ("t_enq", "t_done", "updated_at")]
    assert all(t.utcoffset() == timedelta(0) for t in times)  # one format, UTC, every time
    assert before <= times[0].timestamp() <= times[1].timestamp() <= time.time()
    assert stored["story_id"]

    duplicate = status(env, copy)
    assert duplicate["state"] == "duplicate"
    assert duplicate["duplicate_of"] == first
    assert duplicate["story_id"] == stored["story_id"]
    assert duplicate["match"] == "exact" and duplicate["similarity"] == 1.0

    failed = status(env, gone)
    assert (failed["state"], failed["reason"]) == ("failed", "http_error")

    code, out = cli(env, "status", site.base + "/never/enqueued")
    assert code == 1 and json.loads(out)["known"] is False
    counts = status(env)["states"]
    assert (counts["stored"], counts["duplicate"], counts["failed"]) == (1, 1, 1)


def test_retry_dead_sends_the_poisoned_url_again(
    env: dict[str, str], rt: Runtime, site: Site
) -> None:
    url = site.base + "/story/1"
    rt.ledger.enqueue([url])
    for _ in range(rt.settings.max_deliveries):  # deliveries whose worker died
        rt.ledger.begin(url, FETCHING)
    assert fetch_step(rt, url).state == "failed"  # the next delivery gives up
    assert status(env, "--dead")["dead"] == [url]
    assert status(env, url)["reason"] == "poison"

    code, out = cli(env, "retry", "--dead")
    assert (code, out.strip()) == (0, "re-enqueued 1")
    assert queued_fetches(rt) == [url]
    assert status(env, "--dead")["dead"] == []
    after = status(env, url)  # the store still holds failed/poison: the ledger wins
    assert (after["state"], after["reason"], after["attempts"]) == ("queued", None, 0)


def test_retry_stuck_sends_only_urls_without_progress(
    env: dict[str, str], rt: Runtime, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck, busy = site.base + "/story/0", site.base + "/story/1"
    rt.ledger.enqueue([stuck, busy])
    # taken ten minutes ago by a worker that then vanished: the ledger's clock set back
    # for that one call, so a 60 s window holds however slowly the CLI starts here
    ago = time.time() - 600
    with monkeypatch.context() as m:
        m.setattr(ledger_module, "time", SimpleNamespace(time=lambda: ago))
        rt.ledger.begin(stuck, FETCHING)

    def progress() -> None:  # the other URL keeps moving
        rt.ledger.move(busy, FETCHING)

    progress()
    listed = status(env, "--stuck", "60")["stuck"]
    assert [(s["url"], s["state"]) for s in listed] == [(stuck, "fetching")]
    progress()
    retried = time.monotonic()
    code, out = cli(env, "retry", "--stuck", "60")
    assert (code, out.strip()) == (0, "re-enqueued 1")
    assert queued_fetches(rt) == [stuck]
    assert status(env, stuck)["state"] == "queued"
    assert status(env, busy)["state"] == "fetching"
    # sent again, its clock restarted: not stuck for as long as it has been since then
    # (a threshold ten minutes below its age had the clock not restarted)
    progress()
    since = time.monotonic() - retried + 0.5
    sent: list[str] = []
    assert requeue_stuck(rt.ledger, since, sent.append) == sent == []


def test_beat_checks_for_stuck_urls_every_half_threshold_or_30_s() -> None:
    settings = Settings(visibility_timeout=100)
    assert settings.stuck_threshold == 200
    config = celery_config(settings)
    entry = config["beat_schedule"]["requeue-stuck"]
    assert (entry["task"], entry["schedule"]) == ("newsq.requeue_stuck", 30)
    short = celery_config(Settings(visibility_timeout=100, stuck_after=40))
    assert short["beat_schedule"]["requeue-stuck"]["schedule"] == 20
    assert config["task_routes"]["newsq.requeue_stuck"] == {"queue": "fetch"}
    assert Settings.from_env({"NEWSQ_STUCK_AFTER": "30"}).stuck_threshold == 30


def test_beat_task_skips_while_a_backlog_waits(rt: Runtime) -> None:
    from newsq.recovery import backlog

    client: redis.Redis = rt.redis
    prefix = rt.settings.key_prefix
    assert backlog(client, prefix) == 0
    client.rpush(f"{prefix}:q:process", b"{}")
    assert backlog(client, prefix) == 1
