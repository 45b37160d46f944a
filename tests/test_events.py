"""Events: the store's outbox, one event per stored article row, written in the row's
own transaction. Real SQLite and PostgreSQL; the CLI's ``newsq run`` and ``newsq
events`` as a user runs them, on a local site and a real Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import newsq
from newsq.config.settings import Settings
from newsq.store.database import ARTICLE, Store, articles, now
from newsq.store.events import COPY_FIELDS, read
from newsq.store.export import FIELDS
from tests.cli import local_env, newsq_env, run_newsq
from tests.faults.site import Site, serve
from tests.test_store import _row as store_row


def _row(url: str, story: str, text: str | None, dup: str | None = None) -> dict[str, Any]:
    return dict(store_row(url, story, text, dup))


def _save(store: Store, row: dict[str, Any]) -> bool:
    state = "stored" if row["duplicate_of"] is None else "duplicate"
    return store.save_article(row, {"url": row["url"], "state": state})


def _article_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(articles)).scalar_one()


def test_each_new_row_is_one_event_in_order_and_since_resumes(database_url: str) -> None:
    store = Store.from_url(database_url)
    first = _row("http://a.example/1", "s1", "body")
    copy = _row("http://b.example/1", "s1", None, dup=first["url"])
    other = _row("http://a.example/2", "s2", "another body")
    assert _save(store, first)
    assert not _save(store, first)  # a replayed task: no row, no event
    assert _save(store, copy) and _save(store, other)

    got = list(read(store))
    assert [(e["kind"], e["url"]) for e in got] == [
        ("article", first["url"]), ("copy", copy["url"]), ("article", other["url"])
    ]  # fmt: skip
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids))
    assert list(got[0]) == ["id", "kind", *FIELDS]  # the article's exported record
    assert got[0]["text"] == "body" and got[0]["outlets"] == [
        {"site": "example", "url": first["url"], "fetched_at": first["fetched_at"].isoformat()}
    ]
    assert list(got[1]) == ["id", "kind", *COPY_FIELDS]
    assert got[1]["duplicate_of"] == first["url"] and got[1]["similarity"] == 0.9
    json.dumps(got)  # JSON as it is
    for n, event in enumerate(got):  # resumed from any event: the rest, once each
        assert list(read(store, event["id"], batch=1)) == got[n + 1 :]
    assert list(read(store, 0, batch=2)) == got
    store.close()


def test_a_write_that_fails_leaves_no_event_and_one_that_commits_has_it(
    database_url: str,
) -> None:
    store = Store.from_url(database_url)
    row = _row("http://a.example/1", "s1", "body")
    with pytest.raises(sa.exc.IntegrityError):  # the URL's record is refused: all rolls back
        store.save_article(row, {"url": row["url"], "state": None})
    assert list(read(store)) == [] and _article_rows(store) == 0
    assert _save(store, row)
    assert [e["url"] for e in read(store)] == [row["url"]]
    store.close()


KILLED = """
import json, os, signal, sys
from datetime import datetime
import sqlalchemy as sa
from newsq.store.database import Store

store = Store.from_url(sys.argv[1])
row = json.loads(sys.argv[3])
row["fetched_at"] = datetime.fromisoformat(row["fetched_at"])
if sys.argv[2] == "before-commit":
    sa.event.listen(store.engine, "commit", lambda conn: os.kill(os.getpid(), signal.SIGKILL))
store.save_article(row, {"url": row["url"], "state": "stored"})
os.kill(os.getpid(), signal.SIGKILL)  # after the store: the ledger's move, metrics, log
"""


def _killed_worker(database_url: str, moment: str, row: dict[str, Any]) -> None:
    shown = json.dumps({**row, "fetched_at": row["fetched_at"].isoformat()})
    done = subprocess.run([sys.executable, "-c", KILLED, database_url, moment, shown],
                          env=newsq_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_worker_killed_around_the_commit_leaves_the_event_with_its_row(
    database_url: str,
) -> None:
    """Killed before the commit: neither row nor event; the redelivery stores both.
    Killed just after it: both are there; the redelivery adds neither again."""
    Store.from_url(database_url).close()
    lost = _row("http://a.example/lost", "s1", "body")
    kept = _row("http://a.example/kept", "s2", "other body")
    _killed_worker(database_url, "before-commit", lost)
    _killed_worker(database_url, "after-commit", kept)

    store = Store.from_url(database_url)
    assert [e["url"] for e in read(store)] == [kept["url"]]
    assert _article_rows(store) == 1
    assert _save(store, lost) and not _save(store, kept)  # the tasks delivered again
    assert [e["url"] for e in read(store)] == [kept["url"], lost["url"]]
    store.close()


def test_an_event_not_committed_yet_holds_back_the_ones_after_it(database_url: str) -> None:
    """A reader that saw an event has seen every event with a smaller id: a writer's
    event waits for the commit of the one before (PostgreSQL gives ids at insert)."""
    store = Store.from_url(database_url)
    first = _row("http://a.example/1", "s1", "body")
    second = _row("http://a.example/2", "s2", "other body")
    writer = threading.Thread(target=_save, args=(store, second))
    with store.engine.begin() as conn:  # a writer with its row and event, not committed
        stmt = sa.insert(articles).values(stored_at=now(), **first).returning(articles.c.id)
        store._emit(conn, conn.execute(stmt).scalar_one(), ARTICLE)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive()  # the later write waits for the earlier commit
        assert list(read(store)) == []
    writer.join(30)
    assert [e["url"] for e in read(store)] == [first["url"], second["url"]]
    store.close()


def test_a_store_made_before_events_gets_one_for_each_row_it_holds(database_url: str) -> None:
    from alembic import command

    from newsq.store.database import _alembic_config, make_engine

    engine = make_engine(database_url)
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004_paywalled")
        first = _row("http://a.example/1", "s1", "body")
        copy = _row("http://b.example/1", "s1", None, dup=first["url"])
        for row in (first, copy):
            conn.execute(sa.insert(articles).values(stored_at=now(), **row))
    engine.dispose()
    store = Store.from_url(database_url)
    assert [(e["kind"], e["url"]) for e in read(store)] == [
        ("article", first["url"]), ("copy", copy["url"])
    ]  # fmt: skip
    assert _save(store, _row("http://a.example/2", "s2", "more"))
    assert [e["id"] for e in read(store)] == [1, 2, 3]
    store.close()


def test_the_api_reads_and_follows_the_events(settings: Settings) -> None:
    with pytest.raises(newsq.NewsqError, match="no store at"):
        next(newsq.events(settings=settings))
    store = Store.from_url(settings.database_url)
    rows = [_row(f"http://a.example/{n}", f"s{n}", f"body {n}") for n in range(3)]
    _save(store, rows[0])
    following = newsq.events(follow=True, every=0.05, settings=settings)
    assert next(following)["url"] == rows[0]["url"]
    for row in rows[1:]:
        _save(store, row)
    assert [next(following)["url"] for _ in rows[1:]] == [r["url"] for r in rows[1:]]
    following.close()
    assert [e["url"] for e in newsq.events(since=2, settings=settings)] == [rows[2]["url"]]
    store.close()


# -- the CLI over a real run ------------------------------------------------------------


def _read_lines(proc: subprocess.Popen[str], into: list[dict[str, Any]]) -> threading.Thread:
    """A thread that reads ``proc``'s JSON lines into ``into`` until its stdout ends."""

    def run() -> None:
        assert proc.stdout is not None
        into.extend(json.loads(line) for line in proc.stdout)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    return reader


@pytest.mark.slow
def test_newsq_events_lists_each_stored_copy_once_and_resumes(
    redis_url: str, key_prefix: str, database_url: str
) -> None:
    env = local_env(redis_url, key_prefix, database_url)
    site = Site(stories=5, copies=2, missing=1).build()
    follower = subprocess.Popen(
        [sys.executable, "-m", "newsq", "events", "--follow", "--interval", "0.1"],
        env={**env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps where it waits
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    followed: list[dict[str, Any]] = []
    reader = _read_lines(follower, followed)
    errors: list[str] = []  # stderr read as it comes: a full pipe must not stall it
    err_reader = threading.Thread(target=lambda: errors.extend(follower.stderr or ()))
    err_reader.start()
    try:
        with serve(site):
            done = run_newsq("run", *site.urls, "--workers", "1", env=env)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while len(followed) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        follower.send_signal(signal.SIGTERM)
        try:
            code = follower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            follower.send_signal(signal.SIGABRT)
            follower.wait(10)
            err_reader.join(10)
            pytest.fail("no exit 30 s after SIGTERM; it waited in:\n" + "".join(errors))
        assert code == 0, "".join(errors)  # a clean stop
        reader.join(30)
        err_reader.join(30)
        assert errors == []  # no traceback
    finally:
        follower.kill()

    listed = [json.loads(line) for line in run_newsq("events", env=env).stdout.splitlines()]
    assert followed == listed  # the follower saw each event once, in order
    store = Store.from_url(database_url, create=False)
    ends = {r["url"]: r["state"] for r in store.iter_outcomes(["stored", "duplicate"])}
    store.close()
    kinds = {"stored": "article", "duplicate": "copy"}
    assert sorted((e["url"], e["kind"]) for e in listed) == sorted(
        (url, kinds[state]) for url, state in ends.items()
    )  # one event per stored article and per copy: 5 stories, 2 copies
    assert len(listed) == 7
    ids = [e["id"] for e in listed]
    assert ids == sorted(set(ids))
    for n in (0, 4):  # resumed after the nth event: the rest, nothing twice
        rest = run_newsq("events", "--since", str(ids[n]), env=env).stdout.splitlines()
        assert [json.loads(line) for line in rest] == listed[n + 1 :]


def test_newsq_events_refuses_a_bad_since_in_one_line(sqlite_url: str) -> None:
    done = run_newsq("events", "--since", "-1", env=newsq_env(NEWSQ_DATABASE_URL=sqlite_url))
    assert done.returncode == 2 and "--since: '-1' must be at least 0" in done.stderr
    done = run_newsq("events", env=newsq_env(NEWSQ_DATABASE_URL=sqlite_url))
    assert done.returncode == 2 and done.stderr.startswith("newsq: no store at")
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # a read makes no store
