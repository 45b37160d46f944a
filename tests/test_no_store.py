"""A command that only reads finds no store: it says so in one line and makes none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from newsq.ledger import Ledger
from tests.cli import newsq_env, run_newsq

READS = [
    ("export",),
    ("export", "--format", "csv", "--all"),
    ("status",),
    ("status", "https://news.example/a"),
    ("status", "--failed"),
    ("feeds", "list"),
    ("feeds", "remove", "https://news.example/rss.xml"),
]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_read_in_a_folder_without_a_store_makes_none(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    # the default store: newsq.db in the working folder
    done = run_newsq(*command, env=newsq_env(), cwd=str(tmp_path), timeout=60)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        f"newsq: no store at {tmp_path}/newsq.db (NEWSQ_DATABASE_URL=sqlite:///newsq.db): "
        "nothing has been stored there yet"
    ]
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_with_a_broker_the_ledger_answers_before_anything_is_stored(
    tmp_path: Path, redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    # enqueued, not stored yet: status and stats read the ledger, and make no store
    Ledger(redis_client, key_prefix).enqueue(["https://news.example/a"])
    env = newsq_env(NEWSQ_BROKER_URL=redis_url, NEWSQ_KEY_PREFIX=key_prefix)
    counts = run_newsq("status", env=env, cwd=str(tmp_path), timeout=60)
    assert counts.returncode == 0, counts.stderr
    answer = json.loads(counts.stdout)
    assert answer["states"]["queued"] == 1 and answer["store"] == {}
    one = run_newsq("status", "https://news.example/a", env=env, cwd=str(tmp_path), timeout=60)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["state"] == "queued"
    stats = run_newsq("stats", "--once", env=env, cwd=str(tmp_path), timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_write_makes_the_store_that_reads_then_find(tmp_path: Path) -> None:
    path = tmp_path / "folder" / "my.db"
    path.parent.mkdir()
    env = newsq_env(NEWSQ_DATABASE_URL=f"sqlite:///{path}")
    missing = run_newsq("export", env=env, timeout=60)
    assert missing.returncode != 0 and f"no store at {path} " in missing.stderr
    assert not path.exists()
    added = run_newsq("feeds", "add", "https://news.example/rss.xml", env=env, timeout=60)
    assert added.returncode == 0, added.stderr
    export = run_newsq("export", env=env, timeout=60)
    assert (export.returncode, export.stdout, export.stderr) == (0, "", "")
    listed = run_newsq("feeds", "list", env=env, timeout=60)
    assert listed.returncode == 0 and "https://news.example/rss.xml" in listed.stdout
