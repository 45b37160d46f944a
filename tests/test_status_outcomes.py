"""``newsq status --failed/--skipped/--reason``: why URLs failed, from the store.

The hostile server answers with a PDF, a page with no article and a 404; the pipeline's
own steps bring each URL to its end, in process; the real CLI lists them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from newsq.config.settings import Settings
from newsq.pipeline import fetch_step, process_step
from newsq.resources import Runtime
from tests.cli import local_env, run_newsq
from tests.hostile_server import HostileServer

# loaded at collection: trafilatura's import warns, which would be an error in a test
importlib.import_module("newsq.clean.extract")

PATHS = ("/pdf", "/page/menu", "/404")


@pytest.fixture
def base() -> Iterator[str]:
    with HostileServer() as server:
        yield server.url("")


@pytest.fixture
def env(redis_url: str, key_prefix: str, sqlite_url: str, base: str) -> dict[str, str]:
    env = local_env(redis_url, key_prefix, sqlite_url, NEWSQ_FETCH_TIMEOUT="5")
    runtime = Runtime(Settings.from_env(env))
    try:
        urls = [base + path for path in PATHS]
        runtime.ledger.enqueue(urls)
        for url in urls:
            step = fetch_step(runtime, url, hand_off=False)
            if step.page is not None:
                process_step(runtime, url, step.page)
    finally:
        runtime.close()
    return env


def listed(env: dict[str, str], *flags: str) -> list[dict[str, Any]]:
    done = run_newsq("status", *flags, env=env, timeout=60)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_failed_and_skipped_urls_by_reason(env: dict[str, str], base: str) -> None:
    (failed,) = listed(env, "--failed")
    assert failed["url"] == f"{base}/404"
    assert (failed["state"], failed["reason"], failed["detail"]) == ("failed", "http_error",
                                                                     "HTTP 404")  # fmt: skip
    assert failed["attempts"] == 1 and failed["story_id"] is None
    assert datetime.fromisoformat(failed["updated_at"]).utcoffset() is not None

    skipped = {row["url"]: row for row in listed(env, "--skipped")}
    assert set(skipped) == {f"{base}/pdf", f"{base}/page/menu"}
    assert skipped[f"{base}/pdf"]["reason"] == "bad_content_type"
    assert skipped[f"{base}/pdf"]["detail"] == "Content-Type application/pdf"
    assert skipped[f"{base}/page/menu"]["reason"] == "no_content"

    assert listed(env, "--skipped", "--reason", "bad_content_type") == [skipped[f"{base}/pdf"]]
    assert listed(env, "--failed", "--reason", "bad_content_type") == []
    # --reason alone looks at both; both flags list both, by URL
    assert [r["url"] for r in listed(env, "--reason", "http_error")] == [f"{base}/404"]
    assert [r["url"] for r in listed(env, "--failed", "--skipped")] == sorted(
        base + path for path in PATHS
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--failed", "--reason", "nonsense"), "--reason: unknown reason code 'nonsense' (one of"),
        (("--failed", "https://news.example/a"), "--failed, --skipped and --reason list URLs"),
        (("--skipped", "--dead"), "--failed, --skipped and --reason list URLs"),
    ],
)
def test_bad_listing_flags_are_one_line(flags: tuple[str, ...], says: str, tmp_path: Path) -> None:
    db = tmp_path / "newsq.db"
    env = local_env("redis://127.0.0.1:1/0", "unused", f"sqlite:///{db}")
    done = run_newsq("status", *flags, env=env, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"newsq: {says}")
    assert not db.exists()
