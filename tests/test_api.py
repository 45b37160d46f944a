"""The Python API (``newsq.enqueue``, ``status``, ``wait``, ``extract``) on a real Redis
and store, with a real worker doing the fetching, and the README's example run as
written."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis

import newsq
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from tests.cli import imported_by, local_env
from tests.corpus_server import corpus, serve_pages
from tests.faults.site import Site, serve
from tests.processes import running

ROOT = Path(__file__).resolve().parents[1]
PAGES = Path(__file__).resolve().parent / "pages"


def fetch_messages(client: redis.Redis, prefix: str) -> list[tuple[str, list[object]]]:
    """(task name, arguments) of each message waiting on the broker's fetch queue."""
    out = []
    for raw in client.lrange(f"{prefix}:q:fetch", 0, -1):
        message = json.loads(raw)
        out.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]))
    return out


@contextmanager
def worker(settings: Settings, log: Path) -> Iterator[dict[str, str]]:
    """A real ``newsq worker`` on both queues against ``settings``' Redis and store;
    yields its environment."""
    env = local_env(settings.broker_url or "", settings.key_prefix, settings.database_url)
    cmd = [sys.executable, "-m", "newsq", "worker", "--queues", "fetch,process",
           "--pool", "threads", "--concurrency", "4"]  # fmt: skip
    with running(cmd, env, log) as proc:
        yield env
        assert proc.poll() is None, log.read_text()[-3000:]


def test_import_newsq_loads_neither_celery_nor_the_extractor() -> None:
    loaded = imported_by("newsq")
    assert not {"celery", "trafilatura", "sqlalchemy", "redis", "httpx"} & loaded
    assert "newsq.api" not in loaded
    for name in newsq.__all__:
        assert getattr(newsq, name) is not None
    assert {"enqueue", "status", "wait", "extract"} <= set(dir(newsq))
    with pytest.raises(AttributeError):
        newsq.no_such_thing  # noqa: B018


def test_enqueue_normalises_and_enqueues_each_url_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    first = newsq.enqueue(
        ["https://News.Example/a?b=2&a=1#top", "https://news.example/a?a=1&b=2", "ftp://x/y"],
        settings=settings,
    )
    url = "https://news.example/a?a=1&b=2"
    assert (first.new, first.known, first.invalid) == ([url], [], ["ftp://x/y"])
    # a copy behind a tracking parameter is the URL already enqueued: not sent again
    again = newsq.enqueue("https://news.example/a?utm_source=feed&a=1&b=2", settings=settings)
    assert (again.new, again.known) == ([], [url])
    assert fetch_messages(redis_client, settings.key_prefix) == [("newsq.fetch", [url])]

    queued = newsq.status("https://news.example/a?b=2&a=1&utm_medium=x", settings=settings)
    assert queued is not None
    assert (queued["url"], queued["state"], queued["attempts"]) == (url, "queued", 0)
    assert datetime.fromisoformat(queued["t_enq"]).utcoffset() == timedelta(0)
    invalid = newsq.status("ftp://x/y", settings=settings)
    assert invalid is not None
    assert (invalid["state"], invalid["reason"]) == ("failed", "invalid_url")
    assert newsq.status("https://news.example/never", settings=settings) is None


def test_without_a_broker_enqueue_and_wait_say_what_they_need(settings: Settings) -> None:
    alone = Settings(database_url=settings.database_url)
    with pytest.raises(ConfigError, match="NEWSQ_BROKER_URL"):
        newsq.enqueue(["https://news.example/a"], settings=alone)
    with pytest.raises(ConfigError, match="NEWSQ_BROKER_URL"):
        newsq.wait(["https://news.example/a"], settings=alone)
    assert newsq.status("https://news.example/a", settings=alone) is None  # the store alone


def test_wait_returns_at_the_timeout_with_the_states_so_far(settings: Settings) -> None:
    newsq.enqueue(["https://news.example/queued"], settings=settings)
    started = time.monotonic()
    states = newsq.wait(["https://news.example/queued", "https://news.example/never"],
                        timeout=0.3, settings=settings, every=0.1)  # fmt: skip
    assert time.monotonic() - started < 5
    assert states == {"https://news.example/queued": "queued", "https://news.example/never": None}


@pytest.mark.slow
def test_a_worker_finishes_what_enqueue_sent_and_wait_returns_the_end_states(
    settings: Settings, tmp_path: Path
) -> None:
    with serve(Site(stories=2, copies=1, missing=1).build()) as site:
        story, other, copy, gone = (site.base + p for p in
                                    ("/story/0", "/story/1", "/copy/0", "/gone/0"))  # fmt: skip
        intake = newsq.enqueue([story, other, gone], settings=settings)
        assert intake.new == [story, other, gone]
        with worker(settings, tmp_path / "worker.log"):
            states = newsq.wait(intake.new, timeout=90, settings=settings)
            # the copy after its original, so which one is the duplicate is known
            later = newsq.enqueue([copy], settings=settings)
            states |= newsq.wait(later.new, timeout=90, settings=settings)
            # keyed as given: a spelling of its own finds the same URL, done already
            tracked = newsq.wait([story + "?utm_source=x"], timeout=5, settings=settings)
    assert states == {story: "stored", other: "stored", gone: "failed", copy: "duplicate"}
    assert tracked == {story + "?utm_source=x": "stored"}
    stored, duplicate = (newsq.status(u, settings=settings) for u in (story, copy))
    assert stored is not None and duplicate is not None
    assert duplicate["duplicate_of"] == story and duplicate["story_id"] == stored["story_id"]
    failed = newsq.status(gone, settings=settings)
    assert failed is not None and failed["reason"] == "http_error"


def test_extract_cleans_a_saved_page_offline() -> None:
    pages = corpus()
    html, gold = pages[sorted(pages)[1]]
    article = newsq.extract(html, url="https://www.example.com/opinion/1")
    assert isinstance(article, newsq.Article)
    assert article.title and article.site == "example.com"
    words = set(article.text.split())
    assert len(words & set(gold.split())) > 0.8 * len(set(gold.split()))
    assert newsq.extract(html.decode("utf-8")) == newsq.extract(html)  # str or bytes
    dropped = newsq.extract((PAGES / "no_article.html").read_bytes())
    assert isinstance(dropped, newsq.Drop) and dropped.reason


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("### Python API", 1)[1].split("\n## ")[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


@pytest.mark.slow
def test_the_readme_example_runs_as_written(settings: Settings, tmp_path: Path) -> None:
    code = readme_example()
    assert len(code.splitlines()) <= 10
    pages = corpus()
    ids = sorted(pages)
    served = {"/a": pages[ids[1]][0], "/b": pages[ids[2]][0]}
    (tmp_path / "page.html").write_bytes(pages[ids[1]][0])
    with serve_pages(served) as base, worker(settings, tmp_path / "worker.log") as env:
        # the one change: the example's site is this test's, on loopback
        script = code.replace("https://example.com", base)
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "2 new, 0 already known"
    for line, path in zip(lines[1:3], ("/a", "/b"), strict=True):
        url, state, story_id = line.split(" ")
        assert (url, state) == (base + path, "stored") and story_id != "None"
    article = newsq.extract(pages[ids[1]][0])
    assert isinstance(article, newsq.Article) and lines[3] == article.title
