"""Prometheus metrics: scraped over HTTP from a real prefork worker that processed pages."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from processes import running
from prometheus_client.parser import text_string_to_metric_families

from newsq.config.celery import QUEUES, queue_keys
from newsq.ledger import Ledger
from newsq.metrics import OTHER, BoundedLabels, RedisStateCollector, dedup_ratio, metric_names
from newsq.records import TERMINAL
from tests.corpus_server import corpus, serve_pages


def test_cli_and_celery_app_do_not_import_prometheus_client() -> None:
    # multiprocess mode is fixed at import: the worker must set its directory first
    code = (
        "import sys, newsq.workers.cli, newsq.workers.commands, newsq.workers.worker\n"
        "import newsq.workers.logs, newsq.config.celery\n"
        "assert 'prometheus_client' not in sys.modules, 'imported too early'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_labels_are_bounded() -> None:
    labels = BoundedLabels(limit=3)
    assert [labels(h) for h in ("a", "b", "a", "c", "d", "b", "e")] == [
        "a", "b", "a", "c", OTHER, "b", OTHER,
    ]  # fmt: skip
    assert dedup_ratio({"stored": 3, "duplicate": 1}) == 0.25
    assert dedup_ratio({}) == 0.0


def test_queue_depth_is_read_per_lane(redis_client: redis.Redis, key_prefix: str) -> None:
    fetch_fresh, fetch_bulk = queue_keys(key_prefix, "fetch")
    redis_client.rpush(fetch_fresh, "m1", "m2")
    redis_client.rpush(fetch_bulk, "m3")
    redis_client.rpush(queue_keys(key_prefix, "process")[1], "m4", "m5", "m6")
    families = RedisStateCollector(redis_client, key_prefix, QUEUES).collect()
    depth = next(f for f in families if f.name == "newsq_queue_depth")
    assert {(s.labels["queue"], s.labels["lane"]): s.value for s in depth.samples} == {
        ("fetch", "fresh"): 2, ("fetch", "bulk"): 1,
        ("process", "fresh"): 0, ("process", "bulk"): 3,
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:  # fmt: skip
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@pytest.fixture
def worker_env(redis_url: str, key_prefix: str, sqlite_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NEWSQ_BROKER_URL": redis_url, "NEWSQ_DATABASE_URL": sqlite_url,
        "NEWSQ_KEY_PREFIX": key_prefix, "NEWSQ_ALLOW_PRIVATE": "1", "NEWSQ_HOST_RATE": "0",
        "NEWSQ_ROBOTS": "0", "NEWSQ_METRICS_PORT": str(_free_port()),
    })  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
           "--pool", "prefork", "--concurrency", "2"]  # fmt: skip
    env = {**worker_env, "NEWSQ_LOG_FORMAT": "json"}
    with running(cmd, env, tmp_path / "worker.log") as proc:
        yield proc


@pytest.mark.slow
def test_worker_serves_summed_metrics_of_its_children(
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    pages = corpus()
    chosen = sorted(pages)[:5]
    served = {f"/a/{pid}": pages[pid][0] for pid in chosen}
    served["/copy"] = served[f"/a/{chosen[0]}"]  # an exact copy at another URL
    with serve_pages(served) as base:
        urls = [f"{base}{path}" for path in served] + [f"{base}/missing"]
        subprocess.run([sys.executable, "-m", "newsq", "enqueue", *urls], env=worker_env,
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        ledger = Ledger(redis.Redis.from_url(redis_url), key_prefix)
        deadline = time.monotonic() + 90
        while not all(s in TERMINAL for s in ledger.states(urls)):
            assert worker.poll() is None, "worker died"
            assert time.monotonic() < deadline, ledger.counts()
            time.sleep(0.3)
        samples = _scrape(int(worker_env["NEWSQ_METRICS_PORT"]))

    counts = ledger.counts()
    assert counts["stored"] + counts["duplicate"] == 6 and counts["duplicate"] >= 1
    # the pipeline ran in the pool children: these numbers prove the sum across processes
    assert _total(samples, "newsq_urls_total", state="stored") == counts["stored"]
    assert _total(samples, "newsq_urls_total", state="duplicate") == counts["duplicate"]
    assert _total(samples, "newsq_urls_total", state="failed", reason="http_error") == 1
    assert _total(samples, "newsq_stage_seconds_count", stage="fetch") >= 7
    assert _total(samples, "newsq_stage_seconds_count", stage="clean") == 6
    assert _total(samples, "newsq_stage_seconds_count", stage="store") == 6
    host = base.removeprefix("http://")
    assert _total(samples, "newsq_extracted_total", site=host) == 6
    # read from Redis at scrape time
    assert ("newsq_queue_depth", (("lane", "bulk"), ("queue", "fetch"))) in samples
    assert _total(samples, "newsq_queue_depth") == 0
    assert _total(samples, "newsq_ledger_urls", state="stored") == counts["stored"]
    ratio = counts["duplicate"] / 6
    assert _total(samples, "newsq_dedup_ratio") == pytest.approx(ratio)

    # logs: one JSON object per line; lines logged inside a task carry its id and URL
    lines = [json.loads(x) for x in (tmp_path / "worker.log").read_text().splitlines() if x]
    in_tasks = [x for x in lines if x.get("task_id")]
    stored = [x for x in in_tasks if x["logger"] == "newsq.pipeline" and " stored " in x["msg"]]
    assert len(stored) == counts["stored"], lines
    assert all(x["url"] in urls and x["msg"].startswith(x["url"]) for x in stored)
    assert {x["task_name"] for x in in_tasks} <= {"newsq.fetch", "newsq.process"}
    assert len({x["task_id"] for x in stored}) == len(stored)
    missing = [x for x in in_tasks if x["url"] == f"{base}/missing"]
    assert missing and all(x["task_name"] == "newsq.fetch" for x in missing)


def test_dashboard_and_keda_refer_to_what_newsq_exports() -> None:
    root = Path(__file__).resolve().parent.parent / "deploy"
    dashboard = json.loads((root / "grafana" / "newsq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m.removesuffix("_bucket") for e in exprs for m in re.findall(r"newsq_\w+", e)}
    assert used and used <= set(metric_names()), used - set(metric_names())
    yaml = pytest.importorskip("yaml")
    scaled = list(yaml.safe_load_all((root / "keda-scaledobject.yaml").read_text()))
    lists = {t["metadata"]["listName"] for s in scaled for t in s["spec"]["triggers"]}
    # the broker's keys, both lanes of each queue, default prefix
    assert lists == {key for q in QUEUES for key in queue_keys("newsq", q)}
