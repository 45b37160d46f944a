"""``newsq backfill``: a WARC file of the sample site through clean → dedup → store.

The WARC is captured from the served site over loopback (each answer as the wire gave
it: responses, a PDF, an image, 404s, a redirect, syndicated and exact copies of
stories), with a revisit record, gzipped per record as CC-NEWS ships them.
"""

from __future__ import annotations

import itertools
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from newsq import errors
from newsq.backfill.progress import Progress, Span, job_id, split
from newsq.backfill.source import describe
from newsq.backfill.step import span_step
from newsq.backfill.warc import Skip, read_records, record_start, scan_from
from newsq.config.settings import AllowPrivate, Settings
from newsq.demo.site import SampleSite, SiteSpec
from newsq.demo.warc import capture, write_warc
from newsq.errors import ConfigError, Retryable
from newsq.fetch.client import Fetcher
from newsq.pipeline import process_step
from newsq.resources import Runtime
from newsq.urls import normalize
from tests.cli import local_env, newsq_env, run_newsq
from tests.servers import serve_handler

SPEC = SiteSpec(stories=6, outlets=3, seed=3)


@dataclass(frozen=True)
class Archive:
    site: SampleSite
    path: Path
    plain: Path
    urls: list[str]
    revisited: str


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """The sample site, served for the module, and its WARC files (gzipped, plain)."""
    folder = tmp_path_factory.mktemp("warc")
    with SampleSite.build(SPEC) as site:
        urls = list(site.truth)
        captures = [capture(url) for url in urls]
        revisited = urls[0].rstrip("/") + "/again"  # a URL archived only as a revisit
        for name, gzip in (("site.warc.gz", True), ("site.warc", False)):
            write_warc(folder / name, captures, revisits={revisited: urls[0]}, gzip=gzip)
        yield Archive(site, folder / "site.warc.gz", folder / "site.warc", urls, revisited)


def _offsets(path: Path, cuts: list[int], gzipped: bool) -> list[int]:
    """The record offsets read span by span, the file cut at ``cuts``."""
    found = []
    for start, end in itertools.pairwise(cuts):
        with path.open("rb") as stream:
            stream.seek(scan_from(start, gzipped))
            first = record_start(stream, start, gzipped)
        if first is None or first >= end:
            continue
        with path.open("rb") as stream:
            stream.seek(first)
            found += [r.offset for r in read_records(stream, end, 10_000_000)]
    return found


@pytest.mark.parametrize("gzipped", [True, False])
def test_spans_cut_anywhere_read_every_record_once(archive: Archive, gzipped: bool) -> None:
    path = archive.path if gzipped else archive.plain
    size = path.stat().st_size
    whole = _offsets(path, [0, size], gzipped)
    assert len(whole) == 2 * len(archive.urls) + 2  # warcinfo, request + response each, revisit
    rng = random.Random(5)
    for pieces in (2, 7, 40):
        cuts = sorted({0, size, *(rng.randrange(1, size) for _ in range(pieces - 1))})
        assert _offsets(path, cuts, gzipped) == whole


def _articles(database_url: str) -> list[Any]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT url, story_id, duplicate_of, text, fetched_at "
                                    "FROM articles")).all()  # fmt: skip
    engine.dispose()
    return list(rows)


def _outcomes(database_url: str) -> dict[str, tuple[str, str | None]]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT url, state, reason FROM urls")).all()
    engine.dispose()
    return {r.url: (r.state, r.reason) for r in rows}


def _stories(rows: list[Any], urls: set[str]) -> set[frozenset[str]]:
    """The copies of each story among ``urls``, as sets of URLs."""
    by_story: dict[str, set[str]] = {}
    for row in rows:
        if row.url in urls:
            by_story.setdefault(row.story_id, set()).add(row.url)
    return {frozenset(group) for group in by_story.values()}


@pytest.mark.slow
def test_backfill_stores_what_run_stores_from_the_same_pages(
    archive: Archive, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    backfilled = f"sqlite:///{tmp_path}/backfill.db"
    env = newsq_env(NEWSQ_DATABASE_URL=backfilled)  # embedded: no broker
    done = run_newsq("backfill", str(archive.path), "--workers", "2", env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "backfill.db.redis").is_dir()  # the state kept beside the store

    rows = _articles(backfilled)
    outcomes = _outcomes(backfilled)
    expected = archive.site.expected
    assert len({r.url for r in rows}) == len(rows)  # no URL stored twice
    assert sum(1 for r in rows if r.duplicate_of is None) == expected.stored, (rows, done.stdout)
    assert all(str(r.fetched_at).startswith("2019-11-18") for r in rows)  # the WARC-Date
    assert outcomes[normalize(archive.revisited)] == ("skipped", errors.REVISIT)
    reasons = [reason for state, reason in outcomes.values() if state == "skipped"]
    assert reasons.count(errors.BAD_CONTENT_TYPE) == expected.skipped["bad_content_type"]
    # the 404s and the redirect: archived answers, not pages
    assert reasons.count(errors.HTTP_ERROR) == expected.failed["http_error"] + 1
    assert re.search(rf"^  stored +{expected.stored}$", done.stdout, re.M), done.stdout
    assert f"{2 * len(archive.urls) + 2} records" in done.stdout

    # the same pages fetched over loopback by `newsq run`
    listed = tmp_path / "urls.txt"
    listed.write_text("\n".join(archive.urls) + "\n")
    fetched = f"sqlite:///{tmp_path}/run.db"
    ran = run_newsq("run", "--urls", str(listed), "--workers", "2",
                    env=local_env(redis_url, key_prefix, fetched), cwd=str(tmp_path))  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run_rows = _articles(fetched)
    both = {r.url for r in rows} & {r.url for r in run_rows}
    assert len(both) == len(rows)  # every copy backfilled, run stored too
    assert _stories(rows, both) == _stories(run_rows, both)  # the same stories
    texts = {r.url: r.text for r in run_rows if r.text is not None}
    first = [r for r in rows if r.text is not None and r.url in texts]
    assert first and all(texts[r.url] == r.text for r in first)  # the same texts
    assert sum(1 for r in run_rows if r.duplicate_of is None) == expected.stored

    again = run_newsq("backfill", str(archive.path), "--workers", "1", env=env, cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert _articles(backfilled) == rows  # the file done already: nothing more stored


@pytest.mark.slow
def test_backfill_embedded_on_postgresql(
    archive: Archive, tmp_path: Path, postgres_url: str
) -> None:
    """The embedded command on a PostgreSQL store (its state kept in NAME.redis in the
    working folder): the same outcomes as on SQLite, and a second run adds nothing."""
    env = newsq_env(NEWSQ_DATABASE_URL=postgres_url)
    done = run_newsq("backfill", str(archive.path), "--workers", "2", env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert any(p.suffix == ".redis" and p.is_dir() for p in tmp_path.iterdir())
    rows = _articles(postgres_url)
    expected = archive.site.expected
    assert len({r.url for r in rows}) == len(rows)
    assert sum(1 for r in rows if r.duplicate_of is None) == expected.stored, done.stdout
    assert _outcomes(postgres_url)[normalize(archive.revisited)] == ("skipped", errors.REVISIT)
    assert re.search(rf"^  stored +{expected.stored}$", done.stdout, re.M), done.stdout
    again = run_newsq("backfill", str(archive.path), "--workers", "1", env=env, cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert {(r.url, r.story_id) for r in _articles(postgres_url)} == {
        (r.url, r.story_id) for r in rows
    }
    assert len(_articles(postgres_url)) == len(rows)  # the file done already: nothing more stored


def _spans(source: str, size: int, gzipped: bool, pieces: int) -> list[Span]:
    return split(job_id(source, size), source, size, gzipped, pieces, 1)


class _Held:
    """The hand-on of an in-process span: a page the process step put off is processed
    again once the span is read, as its process task would be."""

    def __init__(self, rt: Runtime) -> None:
        self.rt, self.urls, self.wait = rt, list[str](), 0.0

    def __call__(self, url: str, countdown: float) -> None:
        self.urls.append(url)
        self.wait = max(self.wait, countdown)

    def run(self) -> None:
        while self.urls:
            time.sleep(min(self.wait, 16.0))
            urls, self.urls, self.wait = self.urls, [], 0.0
            for url in urls:
                step = process_step(self.rt, url)
                if step.action == "next":
                    self(url, step.countdown)


def _run_span(rt: Runtime, span: Span) -> None:
    held = _Held(rt)
    span_step(rt, span, lambda url: nullcontext(), held)
    held.run()


class _Killed(BaseException):
    """The worker dies (not an error a task handles)."""


def _dies_on_call(fn: Any, n: int, *, done: bool) -> Any:
    """``fn``, but its ``n``-th call ends in the worker's death: after its work when
    ``done``, else before it."""
    calls = 0

    def dying(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            if done:
                fn(*args)
            raise _Killed
        return fn(*args)

    return dying


def _pages_before(path: Path, records: int) -> int:
    """How many of the first ``records`` records of the file at ``path`` are pages."""
    with path.open("rb") as stream:
        first = list(itertools.islice(read_records(stream, path.stat().st_size, 10**7), records))
    return sum(1 for r in first if r.outcome is not None and not isinstance(r.outcome, Skip))


@pytest.mark.parametrize("where", ["count", "process"])
def test_a_span_killed_between_store_and_count_stores_nothing_twice(
    archive: Archive, settings: Settings, database_url: str, where: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Killed as it counts its second batch (all of it stored), or in the middle of
    its second batch (a page stored, the batch's later URLs claimed, none counted):
    on SQLite and on PostgreSQL."""
    import newsq.backfill.step as step

    rt = Runtime(replace(settings, database_url=database_url))
    source = str(archive.path)
    (span,) = _spans(source, archive.path.stat().st_size, True, 1)
    progress = Progress(rt.redis, settings.key_prefix)
    progress.plan([span], archive.path.stat().st_size)
    if where == "count":
        dies = _dies_on_call(Progress.count_many, 2, done=False)  # its records all stored
        monkeypatch.setattr(Progress, "count_many", dies)
    else:  # the third page of the second batch stored, the batch's later URLs claimed
        dies = _dies_on_call(process_step, _pages_before(archive.path, step.BATCH) + 3, done=True)
        monkeypatch.setattr(step, "process_step", dies)
    held = _Held(rt)  # process tasks sent before the worker died are not lost with it
    with pytest.raises(_Killed):
        span_step(rt, span, lambda url: nullcontext(), held)
    stored_before = len(_articles(database_url))
    records = 2 * len(archive.urls) + 2
    assert stored_before > 0 and progress.totals([span.job])["records"] < records
    monkeypatch.undo()
    span_step(rt, span, lambda url: nullcontext(), held)  # delivered again
    held.run()

    rows = _articles(database_url)
    assert len({r.url for r in rows}) == len(rows) >= stored_before
    totals = progress.settled([span.job], rt.ledger)
    assert totals["records"] == records  # each record counted once
    assert totals["stored"] == archive.site.expected.stored
    assert totals["stored"] + totals["duplicate"] == len(rows)
    rt.close()
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
    engine.dispose()
    assert events == len(rows)  # one event per row written, none twice


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves one file's bytes with ``Range: bytes=A-B`` answers (206)."""

    protocol_version = "HTTP/1.1"
    data = b""
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        ranged = self.headers.get("Range", "")
        type(self).asked.append(ranged)
        first, _, last = ranged.removeprefix("bytes=").partition("-")
        start, end = int(first or 0), min(int(last or len(self.data) - 1), len(self.data) - 1)
        if start >= len(self.data):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.data[start : end + 1]
        self.send_response(206)
        self.send_header("Content-Type", "application/warc")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_url_source_is_read_in_ranges_through_the_guarded_fetcher(
    archive: Archive, settings: Settings
) -> None:
    _RangeHandler.data = archive.path.read_bytes()
    with serve_handler(_RangeHandler) as base:
        url = f"{base}/site.warc.gz"
        guarded = replace(settings, allow_private=AllowPrivate())
        with Fetcher(guarded) as fetcher, pytest.raises(ConfigError, match="blocked_address"):
            describe(url, fetcher)  # loopback, not allowed: refused as a page would be
        with Fetcher(settings) as fetcher:
            size, head = describe(url, fetcher)
        assert size == len(_RangeHandler.data) and head.startswith(b"\x1f\x8b")
        rt = Runtime(settings)
        spans = _spans(url, size, True, 3)
        Progress(rt.redis, settings.key_prefix).plan(spans, size)
        for span in spans:
            _run_span(rt, span)
        totals = Progress(rt.redis, settings.key_prefix).settled([spans[0].job], rt.ledger)
        rt.close()
    assert totals["records"] == 2 * len(archive.urls) + 2
    assert totals["stored"] == archive.site.expected.stored
    assert all(a.startswith("bytes=") for a in _RangeHandler.asked)


def test_range_reads_take_the_hosts_politeness_slots(archive: Archive, settings: Settings) -> None:
    """A Range request waits for a slot of its host as a page fetch does: with the one
    slot held (another fetch of that host), none is sent and the span is retried."""
    from newsq.fetch.politeness import Politeness

    _RangeHandler.data = archive.path.read_bytes()
    polite = replace(settings, host_concurrency=1, fetch_timeout=1.0)
    with serve_handler(_RangeHandler) as base:
        url = f"{base}/site.warc.gz"
        with Fetcher(polite) as fetcher:
            size, _ = describe(url, fetcher)
        rt = Runtime(polite)
        (span,) = _spans(url, size, True, 1)
        Progress(rt.redis, settings.key_prefix).plan([span], size)
        other = Politeness(rt.redis, polite)
        host = urlsplit(url).netloc
        assert other.acquire(host) == 0.0  # a page fetch of the host holds its one slot
        _RangeHandler.asked.clear()
        with pytest.raises(Retryable, match="no politeness slot"):
            span_step(rt, span, lambda url: nullcontext(), _Held(rt))
        assert _RangeHandler.asked == []
        other.release(host)
        _run_span(rt, span)  # the slot free: read through
        totals = Progress(rt.redis, settings.key_prefix).totals([span.job])
        assert rt.politeness.acquire(host) == 0.0  # every slot the reads took is back
        rt.politeness.release(host)
        rt.close()
    assert totals["records"] == 2 * len(archive.urls) + 2 and _RangeHandler.asked


def test_no_wait_sends_the_spans_in_the_bulk_lane_and_returns(
    archive: Archive, redis_url: str, key_prefix: str, sqlite_url: str, redis_client: Any
) -> None:
    from newsq.config.celery import queue_keys

    env = local_env(redis_url, key_prefix, sqlite_url)
    done = run_newsq("backfill", str(archive.path), "--no-wait", "--workers", "1", env=env)
    assert done.returncode == 0, done.stderr
    sent = int(done.stdout.split()[1])  # "sent N spans of 1 files (jobs ...)"
    fresh, bulk = queue_keys(key_prefix, "process")
    assert sent >= 1 and redis_client.llen(bulk) == sent and redis_client.llen(fresh) == 0
    again = run_newsq("backfill", str(archive.path), "--no-wait", env=env)
    assert again.returncode == 0  # the same file: the same job, its spans not done yet


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    done = run_newsq("backfill", str(tmp_path / "none.warc.gz"),
                     env=newsq_env(NEWSQ_DATABASE_URL=f"sqlite:///{tmp_path}/n.db"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("newsq: ") and "none.warc.gz" in done.stderr
    assert "Traceback" not in done.stderr


def test_stats_shows_running_and_finished_backfill_jobs(
    archive: Archive, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    rt = Runtime(settings)
    progress = Progress(rt.redis, settings.key_prefix)
    size = archive.path.stat().st_size
    (whole,) = _spans(str(archive.path), size, True, 1)
    progress.plan([whole], size)
    _run_span(rt, whole)  # finished
    plain = archive.plain.stat().st_size
    spans = _spans(str(archive.plain), plain, False, 3)
    progress.plan(spans, plain)
    _run_span(rt, spans[0])  # running: one range of three done
    rt.close()

    env = newsq_env(NEWSQ_BROKER_URL=redis_url, NEWSQ_KEY_PREFIX=key_prefix,
                    NEWSQ_DATABASE_URL=settings.database_url, COLUMNS="200")  # fmt: skip
    done = run_newsq("stats", "--once", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in done.stdout.splitlines()]
    rows = {row[0]: row[1:] for row in cells if len(row) == 11}
    records = 2 * len(archive.urls) + 2
    finished = rows.get("site.warc.gz")
    assert finished, done.stdout
    assert finished[:2] == ["done", str(records)] and int(finished[2]) > 0, done.stdout
    assert int(finished[6]) > 1 and "revisit 1" in finished[9], done.stdout
    assert finished[8].endswith("/s") and float(finished[8][:-2]) > 0
    running = rows["site.warc"]
    assert running[0] == "1 / 3" and 0 < int(running[1]) < records
    assert running[2] == "0" and int(running[4]) > 0  # its pages all stored by the first


def test_a_span_on_a_redis_cluster(
    archive: Archive, settings: Settings, redis_cluster: Any
) -> None:
    """The state on a Redis Cluster of three masters: a job's progress keys on one
    slot, its claims wherever they hash, every record counted once (no CROSSSLOT)."""
    from redis.crc import key_slot

    prefix = f"nqb{uuid.uuid4().hex[:10]}"
    rt = Runtime(replace(settings, state_url=redis_cluster.url, key_prefix=prefix))
    try:
        size = archive.path.stat().st_size
        spans = _spans(str(archive.path), size, True, 2)
        progress = Progress(rt.redis, prefix)
        progress.plan(spans, size)
        for span in spans:
            _run_span(rt, span)
        totals = progress.settled([spans[0].job], rt.ledger)
        (job,) = progress.jobs()
        assert job.finished and job.counts["records"] == totals["records"]
    finally:
        rt.ledger.flush()  # its throughput timer would write through the closed client
        rt.close()
        keys = []
        for port in redis_cluster.ports:
            node = redis_cluster.client(port)
            found = [k.decode() for k in node.scan_iter(match=f"*{prefix}*", count=1000)]
            keys += found
            for key in found:
                node.delete(key)
            node.close()
    assert totals["records"] == 2 * len(archive.urls) + 2
    assert totals["stored"] == archive.site.expected.stored
    job_keys = [k for k in keys if k.startswith(f"{{{prefix}:backfill:{spans[0].job}}}")]
    assert job_keys and len({key_slot(k.encode()) for k in job_keys}) == 1
