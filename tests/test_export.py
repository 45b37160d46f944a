"""``newsq export``: every format read back, filters, WARC of kept pages, constant memory."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from warcio.archiveiterator import ArchiveIterator

import newsq.clean.extract  # noqa: F401  (first import of trafilatura warns: do it at collection)
from newsq.config.settings import Settings
from newsq.errors import ConfigError
from newsq.pipeline import fetch_step, process_step
from newsq.resources import Runtime
from newsq.store.database import Store, articles, pages
from newsq.store.export import FIELDS, export_store, iso_published
from tests.cli import newsq_env, run_newsq
from tests.corpus_server import corpus, serve_pages

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _row(i: int, *, site: str = "a.example", dup: bool = False,
         text_len: int = 40) -> dict[str, Any]:  # fmt: skip
    url = f"https://{site}/story/{i}"
    return {
        "url": url, "final_url": url, "canonical_url": url, "title": f"Story {i} \"quoted\", comma",
        "author": None, "published": "2026-11-01", "language": "en", "site": site,
        "text": None if dup else f"line one of {i}\nline two ü " + "x" * text_len,
        "content_hash": f"{i:064x}", "story_id": f"s{i // 2 if dup else i}",
        "duplicate_of": f"https://{site}/story/{i - 1}" if dup else None,
        "similarity": 0.93 if dup else 1.0, "match": "near" if dup else "new",
        "fetched_at": T0 + timedelta(hours=i), "stored_at": T0 + timedelta(hours=i),
    }  # fmt: skip


def _bulk(store: Store, rows: list[dict[str, Any]], with_pages: bool = False) -> None:
    with store.engine.begin() as conn:
        conn.execute(articles.insert(), rows)
        if with_pages:
            conn.execute(pages.insert(), [{
                "url": r["url"], "content_hash": r["content_hash"], "final_url": r["final_url"],
                "fetched_at": r["fetched_at"], "content_type": "text/html; charset=utf-8",
                "html_zlib": zlib.compress(f"<html><p>{r['text']}</p></html>".encode()),
            } for r in rows])  # fmt: skip


def _env(sqlite_url: str, **extra: str) -> dict[str, str]:
    return newsq_env(NEWSQ_DATABASE_URL=sqlite_url, **extra)


def _newsq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = run_newsq(*args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def _read(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [{k: (v or None) for k, v in r.items()} for r in csv.DictReader(handle)]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_round_trips(fmt: str, sqlite_url: str, tmp_path: Path) -> None:
    store = Store.from_url(sqlite_url)
    rows = [_row(i, dup=i % 3 == 2) for i in range(1, 2600)]  # spans several batches
    _bulk(store, rows)
    out = tmp_path / f"out.{fmt}"
    report = export_store(store, store.iter_articles(unique_only=False), fmt, str(out))
    assert report == f"exported {len(rows)} articles to {out}"
    back = _read(out, fmt)
    assert [r["url"] for r in back] == [r["url"] for r in rows]
    assert [name for name in back[0] if name != "published_at"] == FIELDS
    first, dup = back[0], back[1]  # story 1 and the duplicate copy of story 2
    assert first["text"] == rows[0]["text"] and first["title"] == rows[0]["title"]
    fetched = first["fetched_at"]  # parquet: a timestamp, else ISO text
    assert (fetched if fmt == "parquet" else datetime.fromisoformat(fetched)) == rows[0][
        "fetched_at"
    ]
    assert dup["text"] is None and dup["duplicate_of"] == "https://a.example/story/1"
    assert float(dup["similarity"]) == pytest.approx(0.93)
    store.close()


def test_filters_since_until_site_and_all(sqlite_url: str, tmp_path: Path) -> None:
    store = Store.from_url(sqlite_url)
    _bulk(store, [_row(i, site="a.example" if i % 2 else "b.example", dup=i == 4)
                  for i in range(1, 11)])  # fmt: skip
    store.close()
    env = _env(sqlite_url)
    since, until = (T0 + timedelta(hours=3)).isoformat(), (T0 + timedelta(hours=8)).isoformat()
    done = _newsq("export", "--since", since, "--until", until, env=env)
    assert [json.loads(x)["url"].rsplit("/", 1)[1] for x in done.stdout.splitlines()] == [
        "3",
        "5",
        "6",
        "7",
    ]  # fmt: skip  (4 is a duplicate copy, 8 is at --until)
    done = _newsq("export", "--all", "--site", "b.example", "--until", "2026-11-01T07:00", env=env)
    assert [json.loads(x)["url"].rsplit("/", 1)[1] for x in done.stdout.splitlines()] == [
        "2", "4", "6"]  # fmt: skip
    bad = run_newsq("export", "--since", "yesterday", env=env, timeout=60)
    assert bad.returncode != 0 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def _story(store: Store) -> None:
    """Story s1 first stored by a.example, copied by b and c, revised at a; story s2 alone."""
    first = _row(1)
    copies = [
        {**_row(i, site=site, dup=True), "story_id": "s1", "duplicate_of": first["url"]}
        for i, site in ((2, "b.example"), (3, "c.example"))
    ]
    revision = {
        **_row(4),
        "url": first["url"],
        "story_id": "s1",
        "match": "revision",
        "duplicate_of": first["url"],
    }
    _bulk(store, [first, copies[0], {**_row(5), "story_id": "s2"}, copies[1], revision])


def test_unique_articles_list_every_outlet_that_ran_them(database_url: str,
                                                         tmp_path: Path) -> None:  # fmt: skip
    store = Store.from_url(database_url)
    _story(store)
    stamp = lambda h: (T0 + timedelta(hours=h)).isoformat()  # noqa: E731
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"o.{fmt}"
        # --since on fetch time leaves the copies out of the rows, not out of the outlets
        rows = store.iter_articles(since=T0 + timedelta(hours=1))
        export_store(store, rows, fmt, str(out))
        back = {r["url"]: r for r in _read(out, fmt)}
        outlets = back["https://a.example/story/1"]["outlets"]
        if fmt == "csv":
            outlets = json.loads(outlets)
        if fmt == "parquet":
            outlets = [{**o, "fetched_at": o["fetched_at"].isoformat()} for o in outlets]
        assert outlets == [
            {"site": "a.example", "url": "https://a.example/story/1", "fetched_at": stamp(1)},
            {"site": "b.example", "url": "https://b.example/story/2", "fetched_at": stamp(2)},
            {"site": "c.example", "url": "https://c.example/story/3", "fetched_at": stamp(3)},
        ], fmt
        assert len(_read(out, fmt)) == 2
    export_store(store, store.iter_articles(unique_only=False), "jsonl", str(out := tmp_path / "a"))
    every = _read(out, "jsonl")
    assert [len(r["outlets"]) if r["outlets"] else None for r in every] == [3, None, 1, None, None]
    store.close()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_file_that_cannot_be_written_is_one_line(fmt: str, sqlite_url: str,
                                                   tmp_path: Path) -> None:  # fmt: skip
    store = Store.from_url(sqlite_url)
    _bulk(store, [_row(i) for i in range(50)])
    for path, says in [(tmp_path / "gone" / "o", "No such file or directory"),
                       (tmp_path, "Is a directory"),
                       (Path("/dev/full"), "No space left on device")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"^cannot write {path}: .*{says}"):
            export_store(store, store.iter_articles(), fmt, str(path))
    store.close()


def test_parquet_keeps_times_as_timestamps(sqlite_url: str, tmp_path: Path) -> None:
    store = Store.from_url(sqlite_url)
    _bulk(store, [{**_row(1), "published": "2026-10-31T23:30:00-02:00"}, _row(2)])
    export_store(store, store.iter_articles(), "parquet", str(out := tmp_path / "o.parquet"))
    schema = pq.read_schema(out)
    for name in ("fetched_at", "published_at"):
        assert str(schema.field(name).type) == "timestamp[us, tz=UTC]", name
    assert str(schema.field("outlets").type.value_type.field("fetched_at").type) == (
        "timestamp[us, tz=UTC]")  # fmt: skip
    first, second = pq.read_table(out).to_pylist()
    assert first["published"] == "2026-10-31T23:30:00-02:00"
    assert first["published_at"] == datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
    assert (second["published"], second["published_at"]) == ("2026-11-01", T0)
    assert first["fetched_at"] == T0 + timedelta(hours=1)
    store.close()


@pytest.mark.parametrize(("stored", "exported"), [
    ("2026-11-01", "2026-11-01"),
    ("2026-11-01T10:00:00+02:00", "2026-11-01T10:00:00+02:00"),
    ("2026-11-01T10:00:00+0200", "2026-11-01T10:00:00+02:00"),
    ("2026-11-01T10:00:00Z", "2026-11-01T10:00:00+00:00"),
    ("2026-11-01T10:00:00", "2026-11-01T10:00:00+00:00"),  # no zone: taken as UTC
    ("2026-11-01 10:00", "2026-11-01T10:00:00+00:00"),
    ("Posted 2026-11-01T10:00+0100", "2026-11-01T10:00:00+01:00"),
    ("yesterday", None),
    (None, None),
])  # fmt: skip
def test_published_is_iso_with_an_offset_or_a_date(stored: str | None,
                                                   exported: str | None) -> None:  # fmt: skip
    assert iso_published(stored) == exported


def test_export_filters_on_publication_time(sqlite_url: str) -> None:
    store = Store.from_url(sqlite_url)
    published = ["2026-10-30", "2026-11-01T09:00:00", "2026-11-01", "2026-11-02T01:00:00+03:00",
                 None, "2026-11-03T00:00:00Z"]  # fmt: skip
    _bulk(store, [{**_row(i), "published": p} for i, p in enumerate(published)])
    store.close()
    env = _env(sqlite_url)
    done = _newsq("export", "--published-since", "2026-11-01", "--published-until",
                  "2026-11-02T01:00:00+02:00", env=env)  # fmt: skip
    got = [json.loads(x) for x in done.stdout.splitlines()]
    # 2026-11-02T01:00+03:00 is 22:00 UTC on the 1st: in; the plain date 2026-11-01: in
    assert [r["published"] for r in got] == ["2026-11-01T09:00:00+00:00", "2026-11-01",
                                             "2026-11-02T01:00:00+03:00"]  # fmt: skip
    bad = run_newsq("export", "--published-since", "last week", env=env, timeout=60)
    assert bad.returncode != 0 and "--published-since" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_pipeline_keeps_raw_pages_and_warc_reads_back(settings: Settings, tmp_path: Path) -> None:
    source = corpus()
    chosen = sorted(source)[:3]
    served = {f"/a/{pid}": source[pid][0] for pid in chosen}
    served["/copy"] = served[f"/a/{chosen[0]}"]
    rt = Runtime(dataclasses.replace(settings, keep_raw=True, robots=False))
    with serve_pages(served) as base:
        urls = [f"{base}{path}" for path in served]
        rt.ledger.enqueue(urls)
        held = []
        for url in urls:
            assert fetch_step(rt, url).action == "next"
            step = process_step(rt, url)
            if step.action == "next":  # a new site's short page waits for its template
                held.append(url)
            else:
                assert step.state in ("stored", "duplicate")
        for url in held:  # looked at again once the site has been quiet for a while
            while (step := process_step(rt, url)).action == "next":
                time.sleep(step.countdown)
            assert step.state in ("stored", "duplicate")
    rt.close()
    warc = tmp_path / "pages.warc.gz"
    env = _env(settings.database_url)
    done = _newsq("export", "--all", "--out", str(tmp_path / "a.jsonl"), "--warc", str(warc),
                  env=env)  # fmt: skip
    assert "4 raw pages" in done.stderr and "no kept page" not in done.stderr
    with warc.open("rb") as handle:
        records = list(ArchiveIterator(handle))
    responses = [r for r in records if r.rec_type == "response"]
    assert records[0].rec_type == "warcinfo" and len(responses) == 4
    # ArchiveIterator yields records lazily; re-read to get each payload
    with warc.open("rb") as handle:
        got = {r.rec_headers.get_header("newsq-URL"): (r.http_headers.get_statuscode(),
                                                        r.content_stream().read())
               for r in ArchiveIterator(handle) if r.rec_type == "response"}  # fmt: skip
    for url in urls:
        status, body = got[url]
        assert status == "200"
        path = url.removeprefix(base)
        assert body == served[path].decode("utf-8").encode("utf-8")

    # unique-only export: the duplicate's page is not archived
    done = _newsq("export", "--out", str(tmp_path / "u.csv"), "--format", "csv", "--warc",
                  str(tmp_path / "u.warc"), env=env)  # fmt: skip
    assert "3 raw pages" in done.stderr


def _peak_rss_kb(args: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "newsq", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return int(usage.ru_maxrss)


@pytest.mark.slow
def test_export_of_20k_rows_runs_in_constant_memory(tmp_path: Path) -> None:
    small, large = f"sqlite:///{tmp_path}/small.db", f"sqlite:///{tmp_path}/large.db"
    for url, n in ((small, 500), (large, 20_000)):
        store = Store.from_url(url)
        for start in range(0, n, 5000):
            _bulk(store, [_row(i, text_len=3000) for i in range(start, min(n, start + 5000))],
                  with_pages=True)  # fmt: skip
        store.close()
    data_mb = 20_000 * 3 / 1024  # ~60 MB of text in the large store
    for fmt in ("jsonl", "parquet"):
        args = ["export", "--format", fmt, "--out", str(tmp_path / f"o.{fmt}")]
        if fmt == "jsonl":
            args += ["--warc", str(tmp_path / "o.warc.gz")]
        base = _peak_rss_kb(args, _env(small))
        peak = _peak_rss_kb(args, _env(large))
        growth_mb = (peak - base) / 1024
        assert growth_mb < 25, f"{fmt}: peak RSS grew {growth_mb:.0f} MB for {data_mb:.0f} MB"
    engine = sa.create_engine(large)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one() == 20_000
    engine.dispose()
    assert pq.read_metadata(tmp_path / "o.parquet").num_rows == 20_000
