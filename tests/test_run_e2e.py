"""End to end: the real ``newsq`` CLI, real Celery workers, a real Redis and store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from newsq.feeds.intake import batches
from tests.cli import local_env, run_newsq
from tests.corpus_server import corpus, serve_pages

pytestmark = pytest.mark.slow


@pytest.fixture
def env(redis_url: str, key_prefix: str, database_url: str) -> dict[str, str]:
    return local_env(redis_url, key_prefix, database_url)


@pytest.mark.parametrize("layout", ["combined", "split"])
def test_run_over_the_corpus_stores_each_article_once(
    env: dict[str, str], tmp_path: Path, database_url: str, layout: str
) -> None:
    pages = corpus()
    chosen = sorted(pages)[:40]
    served = {f"/a/{pid}": pages[pid][0] for pid in chosen}
    with serve_pages(served) as base:
        urls = [f"{base}/a/{pid}" for pid in chosen]
        # the same pages again, behind tracking parameters: normalised away, not refetched
        urls += [f"{u}?utm_source=rss&fbclid=x" for u in urls[:5]]
        urls += [f"{base}/missing", "ftp://example.com/x"]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        done = run_newsq("run", "--urls", str(tmp_path / "urls.txt"), "--workers", "2",
                         "--layout", layout, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr  # the ftp URL was refused and said; the rest ran
    assert "newsq: ftp://example.com/x: invalid_url\n" in done.stderr

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT url, title, text, duplicate_of FROM articles")).all()
        states = dict(conn.execute(sa.text("SELECT url, state FROM urls")).all())
    engine.dispose()
    stored = [r for r in rows if r.duplicate_of is None]
    assert len({r.url for r in rows}) == len(rows)  # nothing stored twice
    assert len(stored) >= 38  # distinct real articles (a corpus page may be a near copy)
    assert all(r.title and len(r.text) > 200 for r in stored)
    assert states[f"{base}/missing"] == "failed"

    status = run_newsq("status", env=env)
    counts = json.loads(status.stdout)["states"]
    assert counts["queued"] == counts["fetching"] == counts["fetched"] == 0
    assert counts["stored"] + counts["duplicate"] == len(chosen)
    assert counts["failed"] == 2  # the 404 and the ftp URL

    exported = run_newsq("export", env=env)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == len(stored)
    assert {"url", "final_url", "canonical_url", "title", "text", "story_id",
            "duplicate_of", "similarity", "fetched_at"} <= set(lines[0])  # fmt: skip


def test_a_surge_shares_messages_and_every_url_still_ends_on_its_own(
    redis_url: str, key_prefix: str, sqlite_url: str, tmp_path: Path
) -> None:
    """130 URLs go in batches of 2 (``newsq.fetch_many``); a per-host rate makes some
    URLs of a batch wait, so they go on as ``newsq.fetch`` tasks of their own."""
    env = {**local_env(redis_url, key_prefix, sqlite_url), "NEWSQ_HOST_RATE": "60",
           "NEWSQ_FETCH_BATCH": "8"}  # fmt: skip
    pages = corpus()
    served = {f"/a/{pid}": pages[pid][0] for pid in sorted(pages)}
    with serve_pages(served) as base:
        urls = [f"{base}/a/{pid}" for pid in sorted(pages)]
        urls += [f"{base}/missing/{i}" for i in range(130 - len(urls))]
        assert {len(b) for b in batches(urls, 8)} == {2}
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        done = run_newsq("run", "--urls", str(tmp_path / "urls.txt"), "--workers", "2", env=env)
    assert done.returncode == 0, done.stderr
    counts = json.loads(run_newsq("status", env=env).stdout)["states"]
    assert counts["stored"] + counts["duplicate"] == len(pages)
    assert counts["failed"] == 130 - len(pages)
    assert counts["queued"] == counts["fetching"] == counts["fetched"] == 0
