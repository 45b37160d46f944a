"""The embedded default keeps its state: ``newsq run`` with no ``NEWSQ_BROKER_URL``, run
again and again on one store, as a cron user would (real processes, a local site).

The private Redis keeps the ledger and the dedup index in ``newsq.db.redis/`` beside the
store; the read commands use it after the run; a killed server recovers from its AOF;
a second run at the same time waits for the first.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.cli import newsq_env, run_newsq
from tests.corpus_server import corpus

pytestmark = pytest.mark.slow

ARTICLES = 40


@dataclass
class Site:
    """A news site on loopback: an RSS feed of article pages, every request logged."""

    base: str
    pages: dict[str, tuple[str, bytes]]
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)

    @property
    def feed(self) -> str:
        return f"{self.base}/rss.xml"

    @property
    def articles(self) -> list[str]:
        return [f"{self.base}{path}" for path in self.pages if path.startswith("/a/")]

    def fetched(self, since: int = 0) -> Counter[str]:
        """Article URLs requested (after the first ``since`` requests), with counts."""
        return Counter(f"{self.base}{p}" for p in self.requests[since:] if p != "/rss.xml")


@contextmanager
def serve_site(articles: int = ARTICLES, delay: float = 0.0) -> Iterator[Site]:
    pages = corpus()
    chosen = sorted(pages)[:articles]
    site = Site(base="", pages={}, delay=delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            site.requests.append(self.path)
            found = site.pages.get(self.path)
            if found and self.path.startswith("/a/") and site.delay:
                time.sleep(site.delay)
            kind, body = found or ("text/plain", b"")
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    for pid in chosen:
        site.pages[f"/a/{pid}"] = ("text/html; charset=utf-8", pages[pid][0])
    items = "".join(f"<item><title>{pid}</title><link>{site.base}/a/{pid}</link></item>"
                    for pid in chosen)  # fmt: skip
    rss = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}'
    rss += "</channel></rss>"
    site.pages["/rss.xml"] = ("application/rss+xml", rss.encode())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def env() -> dict[str, str]:
    """No broker, the default store (``newsq.db`` in the working folder)."""
    return newsq_env(NEWSQ_ALLOW_PRIVATE="1", NEWSQ_HOST_RATE="0", NEWSQ_ROBOTS="0")


def newsq(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_newsq(*args, env=env(), cwd=str(cwd))


def spawn(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "newsq", *args], env=env(), cwd=cwd,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def articles(cwd: Path) -> list[tuple[str, str, str, str | None]]:
    """(url, story_id, content_hash, duplicate_of) of every stored copy."""
    with sqlite3.connect(cwd / "newsq.db") as db:
        query = "SELECT url, story_id, content_hash, duplicate_of FROM articles"
        return db.execute(query).fetchall()


def stored_count(cwd: Path) -> int:
    try:
        with sqlite3.connect(cwd / "newsq.db", timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM articles").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet
        return 0


def lock_is_free(cwd: Path) -> bool:
    """True when no process (nor its redis-server) holds the state's lock."""
    with open(cwd / "newsq.db.redis" / "lock") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def owner(cwd: Path) -> dict[str, object]:
    try:
        found = json.loads((cwd / "newsq.db.redis" / "lock").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Site, int, str]]:
    """A feed run twice in one folder; the second run also gets a byte-identical copy of
    the first article at a new URL. Yields the folder, the site, where the second run's
    requests begin, and the second run's summary."""
    cwd = tmp_path_factory.mktemp("cron")
    with serve_site() as site:
        ok(newsq(cwd, "run", "--feed", site.feed, "--workers", "1"))
        site.pages["/copy/1"] = site.pages[site.articles[0].removeprefix(site.base)]
        since = len(site.requests)
        copy = f"{site.base}/copy/1"
        second = ok(newsq(cwd, "run", "--feed", site.feed, copy, "--workers", "1"))
        yield cwd, site, since, second.stdout


def test_a_second_run_of_a_feed_fetches_and_stores_nothing_it_has(
    two_runs: tuple[Path, Site, int, str],
) -> None:
    cwd, site, since, summary = two_runs
    assert re.search(rf"already known \(not fetched again\)\s+{ARTICLES}\b", summary)
    assert site.fetched(since) == Counter({f"{site.base}/copy/1": 1})  # and the feed
    assert all(n == 1 for n in site.fetched().values())
    rows = articles(cwd)
    assert len(rows) == ARTICLES + 1
    assert len({url for url, *_ in rows}) == len(rows)
    assert (cwd / "newsq.db.redis").is_dir() and lock_is_free(cwd)


def test_a_copy_run_later_joins_the_story_of_the_first(
    two_runs: tuple[Path, Site, int, str],
) -> None:
    cwd, site, *_ = two_runs
    copy = f"{site.base}/copy/1"
    by_url = {url: (story, digest, dup) for url, story, digest, dup in articles(cwd)}
    first = site.articles[0]
    assert by_url[copy][1] == by_url[first][1]  # byte-identical: one content hash
    assert by_url[copy][0] == by_url[first][0]  # ... and one story
    assert by_url[copy][2] == first


def test_status_and_stats_read_the_state_after_the_run(
    two_runs: tuple[Path, Site, int, str],
) -> None:
    cwd, site, *_ = two_runs
    copy = f"{site.base}/copy/1"
    one = json.loads(ok(newsq(cwd, "status", copy)).stdout)
    assert one["state"] == "duplicate" and one["duplicate_of"] == site.articles[0]
    assert one["t_enq"] and one["t_done"] >= one["t_enq"]  # what only the ledger keeps
    stuck = json.loads(ok(newsq(cwd, "status", "--stuck", "1")).stdout)
    assert stuck["stuck"] == [] and stuck["states"]["stored"] + stuck["states"]["duplicate"] == 41
    table = ok(newsq(cwd, "stats", "--once")).stdout
    assert "URLs by state" in table and "queue fetch" in table
    assert lock_is_free(cwd)


def test_retry_after_the_run_is_resumed_by_the_next(tmp_path: Path) -> None:
    with serve_site(articles=5) as site:
        ok(newsq(tmp_path, "run", "--feed", site.feed, "--workers", "1"))
        again = site.articles[2]
        assert ok(newsq(tmp_path, "retry", again)).stdout.strip() == "re-enqueued 1"
        assert json.loads(ok(newsq(tmp_path, "status", again)).stdout)["state"] == "queued"
        since = len(site.requests)
        rerun = ok(newsq(tmp_path, "run", "--feed", site.feed, "--workers", "1"))
        assert "resuming 1 URLs" in rerun.stderr
        assert site.fetched(since) == Counter({again: 1})
    assert json.loads(ok(newsq(tmp_path, "status", again)).stdout)["state"] == "stored"
    assert len(articles(tmp_path)) == 5


def test_a_resumed_run_also_does_its_new_urls(tmp_path: Path) -> None:
    """The leftovers are sent before this run's new URLs, not after: their purge of the
    queue took the new URLs' messages too, and the run waited out its timeout."""
    with serve_site(articles=4) as site:
        first, again, new = site.articles[0], site.articles[1], site.articles[2]
        ok(newsq(tmp_path, "run", first, again, "--workers", "1"))
        assert ok(newsq(tmp_path, "retry", again)).stdout.strip() == "re-enqueued 1"
        rerun = ok(newsq(tmp_path, "run", again, new, "--workers", "1", "--timeout", "30"))
        assert "resuming 1 URLs" in rerun.stderr
    states = {url: json.loads(ok(newsq(tmp_path, "status", url)).stdout)["state"]
              for url in (first, again, new)}  # fmt: skip
    assert states == dict.fromkeys((first, again, new), "stored")


def test_read_commands_say_when_there_is_no_state_and_make_none(tmp_path: Path) -> None:
    for args in (("stats", "--once"), ("retry", "http://example.com/a")):
        done = newsq(tmp_path, *args)
        assert done.returncode != 0
        assert done.stderr.startswith("newsq: ") and len(done.stderr.splitlines()) == 1
        assert "no embedded state here yet (newsq.db.redis" in done.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_a_redis_killed_mid_run_recovers_on_the_next_run(tmp_path: Path) -> None:
    with serve_site(delay=0.15) as site:
        first = spawn(tmp_path, "run", "--feed", site.feed, "--workers", "1",
                      "--fetch-threads", "2")  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while stored_count(tmp_path) < 8 and first.poll() is None:
                assert time.monotonic() < deadline, "the first run stored nothing"
                time.sleep(0.1)
            port = owner(tmp_path)["port"]
            client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
            os.kill(int(client.info("server")["process_id"]), signal.SIGKILL)
            client.close()
            _, err = first.communicate(timeout=120)
        finally:
            first.kill()
            first.wait()
        assert first.returncode != 0 and "Traceback" not in err
        before = {url: story for url, story, *_ in articles(tmp_path)}
        assert 8 <= len(before) < ARTICLES
        since = len(site.requests)
        rerun = ok(newsq(tmp_path, "run", "--feed", site.feed, "--workers", "1"))
        assert "resuming" in rerun.stderr
    # the ledger survived: what was stored is not fetched again (but for the URLs in
    # flight when the server died, stored before the ledger heard of it)
    refetched = set(site.fetched(since)) & set(before)
    assert len(refetched) <= 2, refetched
    rows = articles(tmp_path)
    assert sorted(url for url, *_ in rows) == sorted(site.articles)  # each stored once
    assert all(story == before[url] for url, story, *_ in rows if url in before)
    assert lock_is_free(tmp_path)


def test_a_second_run_at_the_same_time_waits_for_the_first(tmp_path: Path) -> None:
    with serve_site(delay=0.05) as site:
        first = spawn(tmp_path, "run", "--feed", site.feed, "--workers", "1")
        second = None
        try:
            deadline = time.monotonic() + 60
            while owner(tmp_path).get("command") != "newsq run":
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.05)
            second = spawn(tmp_path, "run", "--feed", site.feed, "--workers", "1")
            _, err1 = first.communicate(timeout=300)
            out2, err2 = second.communicate(timeout=300)
        finally:
            for proc in (first, second):
                if proc is not None:
                    proc.kill()
                    proc.wait()
    assert first.returncode == 0, err1[-2000:]
    assert second.returncode == 0, err2[-2000:]
    assert f"newsq: waiting for 'newsq run' (pid {first.pid}) to finish" in err2
    assert site.fetched() == Counter(dict.fromkeys(site.articles, 1))  # each fetched once
    assert "already known" in out2
    assert len(articles(tmp_path)) == ARTICLES
