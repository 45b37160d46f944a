"""`celery -A newsq worker` runs newsq's own start-up, as `newsq worker` does.

Each worker is a real process on the suite's Redis; what it runs is read from outside:
its start-up line and log format on stderr, its metrics endpoint, and the pool Celery
reports over the broker (`inspect stats`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from celery import Celery
from processes import running

from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.workers.redis_server import free_port

CELERY = str(Path(sys.executable).with_name("celery"))


def _env(redis_url: str, key_prefix: str, sqlite_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    env.update({
        "NEWSQ_BROKER_URL": redis_url, "NEWSQ_DATABASE_URL": sqlite_url,
        "NEWSQ_KEY_PREFIX": key_prefix, "NEWSQ_METRICS_PORT": str(port),
        "NEWSQ_LOG_FORMAT": "json",
    })  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def _seen(proc: subprocess.Popen[bytes], log: Path, port: int, app: Celery) -> dict[str, object]:
    """What the running worker shows: start-up line, log lines, metrics, pool."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        stats = app.control.inspect(timeout=1.0).stats() or {}
        if stats and "newsq worker:" in log.read_text():
            break
        time.sleep(0.3)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line one JSON object
    startup = next(r["msg"] for r in records if r["msg"].startswith("newsq worker:"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    (pool,) = [s["pool"] for s in stats.values()]
    return {
        "startup": startup.replace(str(port), "PORT"),
        "pool": pool["implementation"],
        "processes": len(pool.get("processes", [])),
        "metrics": "newsq_queue_depth" in metrics,
        "warmed": any(r["msg"].startswith("worker warmed up") for r in records),
    }


@pytest.mark.slow
def test_celery_cli_and_newsq_worker_start_the_same(
    redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings.from_env({"NEWSQ_BROKER_URL": redis_url, "NEWSQ_KEY_PREFIX": key_prefix})
    from newsq.config.celery import make_app

    app = make_app(settings)
    commands = {
        "celery": [CELERY, "-A", "newsq", "worker", "-Q", "fetch,process", "-c", "2"],
        "newsq": [
            *(sys.executable, "-m", "newsq", "worker"),
            *("--queues", "fetch,process", "--concurrency", "2"),
        ],
    }
    seen = {}
    for name, cmd in commands.items():
        port = free_port()
        log = tmp_path / f"{name}.log"
        with running(cmd, _env(redis_url, key_prefix, sqlite_url, port), log, log.parent) as proc:
            seen[name] = _seen(proc, log, port, app)
    assert seen["celery"] == seen["newsq"]
    assert seen["newsq"]["pool"] == "celery.concurrency.prefork:TaskPool"
    assert seen["newsq"]["processes"] == 2
    assert seen["newsq"]["metrics"] and seen["newsq"]["warmed"]
    assert "queues fetch,process" in str(seen["newsq"]["startup"])


@pytest.mark.slow
def test_pool_threads_is_newsqs_adaptive_pool_under_celery(
    redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings.from_env({"NEWSQ_BROKER_URL": redis_url, "NEWSQ_KEY_PREFIX": key_prefix})
    from newsq.config.celery import make_app

    port = free_port()
    log = tmp_path / "celery.log"
    cmd = [CELERY, "-A", "newsq", "worker", "-Q", "fetch", "-P", "threads", "-c", "4"]
    with running(cmd, _env(redis_url, key_prefix, sqlite_url, port), log, log.parent) as proc:
        seen = _seen(proc, log, port, make_app(settings))
    assert seen["pool"] == "newsq.workers.pool:TaskPool"
    assert "pool newsq.workers.pool" in str(seen["startup"])


def test_celery_config_module_adds_settings_newsq_leaves_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "team_celery.py").write_text(
        "worker_max_tasks_per_child = 500\nbroker_transport_options = {'master_name': 'mymaster'}\n"
    )
    (tmp_path / "team_bad.py").write_text("task_acks_late = False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from newsq.config.celery import make_app

    app = make_app(Settings.from_env({"NEWSQ_CELERY_CONFIG": "team_celery"}))
    assert app.conf.worker_max_tasks_per_child == 500
    options = app.conf.broker_transport_options
    assert options["master_name"] == "mymaster"
    assert options["visibility_timeout"] == 3600  # newsq's own kept beside it
    with pytest.raises(ConfigError, match="task_acks_late is set by newsq"):
        make_app(Settings.from_env({"NEWSQ_CELERY_CONFIG": "team_bad"}))
    with pytest.raises(ConfigError, match="cannot import"):
        make_app(Settings.from_env({"NEWSQ_CELERY_CONFIG": "no_such_module_here"}))


def test_a_run_wakes_only_newsq_s_blocked_reads_on_a_broker_it_did_not_start(
    redis_url: str, key_prefix: str
) -> None:
    """Celery's broker connections are named ``newsq``; a ``newsq run`` on a broker it
    did not start wakes its workers' BRPOPs by that name as they stop (it left them to
    their 1-s timeout: 0.5-0.9 s of each run's end), and leaves others' alone."""
    import threading

    from newsq.config.celery import make_app
    from newsq.workers.embedded import LocalCluster

    settings = Settings.from_env({"NEWSQ_BROKER_URL": redis_url, "NEWSQ_KEY_PREFIX": key_prefix})
    app = make_app(settings)
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.default_channel.client.client_getname() == "newsq"
    app.close()
    replies: dict[str, object] = {}

    def blocked(name: str | None, key: str) -> None:
        client = redis.Redis.from_url(redis_url, client_name=name)
        replies[key] = client.brpop([f"{key_prefix}:{key}"], timeout=5)
        client.close()

    readers = [threading.Thread(target=blocked, args=("newsq", "ours")),
               threading.Thread(target=blocked, args=(None, "theirs"))]  # fmt: skip
    for reader in readers:
        reader.start()
    watcher = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    while sum("b" in c["flags"] for c in watcher.client_list(_type="normal")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cluster = LocalCluster(settings, workers=1)  # not entered: nothing started
    assert cluster._unblock_reads()
    readers[0].join(2)
    assert not readers[0].is_alive() and replies["ours"] is None  # woken, as by a timeout
    assert readers[1].is_alive()  # still waiting
    watcher.lpush(f"{key_prefix}:theirs", "x")
    readers[1].join(5)
    assert replies["theirs"] == (f"{key_prefix}:theirs".encode(), b"x")
    watcher.close()
