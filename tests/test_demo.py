"""``newsq demo`` end to end, as a user runs it: the real CLI, its embedded Redis, its store.

The sample site is deterministic (one seed) except for its ports, so the test builds
the same site for its truth and matches URLs by path and query.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from newsq.demo.site import SampleSite, SiteSpec
from newsq.urls import normalize

pytestmark = pytest.mark.slow


def _path(url: str) -> str:
    parts = urlsplit(normalize(url))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _truth() -> tuple[SampleSite, dict[str, str | None]]:
    """The demo's site (served briefly: URLs exist only once served), truth by path."""
    with SampleSite.build(SiteSpec()) as site:
        truth = site.truth
    by_path: dict[str, str | None] = {}
    for url, story in truth.items():
        key = _path(url)
        assert by_path.get(key, story) == story, f"two outlets share the path {key}"
        by_path[key] = story
    return site, by_path


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``newsq demo`` in a fresh folder with no broker configured (embedded Redis)."""
    cwd = tmp_path_factory.mktemp("demo")
    # as in a clone newsq was installed from (not editable): the worker processes must
    # import the installed package, not the clone's newsq/ folder
    (cwd / "newsq").mkdir()
    (cwd / "newsq" / "__init__.py").write_text('raise ImportError("the folder was imported")')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSQ_")}
    cli = Path(sys.executable).with_name("newsq")
    done = subprocess.run([str(cli), "demo", "--workers", "2"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "{'" not in done.stdout  # a report, not a Python dict
    assert "what the sample site holds: 24 stories" in done.stdout
    # outlets are named as the site names them, not by address or a page's own site name
    assert not re.search(r"127\.0\.0\.\d|Hosted", done.stdout), done.stdout
    store = cwd / "newsq-demo.db"
    assert store.exists()
    return store


def test_demo_counts_match_what_the_site_implies(demo_store: Path) -> None:
    site, _ = _truth()
    expected = site.expected
    with sqlite3.connect(demo_store) as db:
        rows = db.execute("SELECT state, reason FROM urls").fetchall()
    states = Counter(state for state, _ in rows)
    assert len(rows) == expected.urls_in
    assert states["stored"] == expected.stored == expected.stories
    assert states["duplicate"] == expected.duplicate
    skipped = Counter(reason for state, reason in rows if state == "skipped")
    failed = Counter(reason for state, reason in rows if state == "failed")
    assert dict(skipped) == expected.skipped
    assert dict(failed) == expected.failed


def test_demo_stores_each_story_once_and_never_merges_two(demo_store: Path) -> None:
    _, truth = _truth()
    with sqlite3.connect(demo_store) as db:
        articles = db.execute("SELECT url, story_id, duplicate_of FROM articles").fetchall()
    stories_of: dict[str, set[str]] = defaultdict(set)  # truth story -> story ids stored
    truth_of: dict[str, set[str | None]] = defaultdict(set)  # story id -> truth stories
    for url, story_id, _ in articles:
        story = truth[_path(url)]
        assert story is not None, f"{url} has no story, yet was stored"
        stories_of[story].add(story_id)
        truth_of[story_id].add(story)
    split = {s: ids for s, ids in stories_of.items() if len(ids) > 1}
    merged = {i: s for i, s in truth_of.items() if len(s) > 1}
    assert split == {}, f"stories stored more than once: {split}"
    assert merged == {}, f"different stories merged: {merged}"
    assert len(stories_of) == len({s for s in truth.values() if s is not None})
    firsts = {url for url, _, dup in articles if dup is None}
    assert len(firsts) == len(stories_of)
    assert all(dup in firsts for _, _, dup in articles if dup is not None)
