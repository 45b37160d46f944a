"""``newsq export``: stored articles as JSON Lines, CSV or Parquet, streamed.

Rows come from :meth:`newsq.store.database.Store.iter_articles` in batches and are written as
they arrive (Parquet: one row group per 1000 rows), so a store of any size exports in
constant memory. The first copy of each story carries ``outlets``: every stored copy of
it (its own first, then the duplicates, in storage order), read a batch of stories at a
time. ``published`` is given as ISO 8601 with an offset, or a plain date.
``--warc FILE`` writes the kept raw pages in the same pass (:mod:`newsq.store.warc`).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from itertools import islice
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa

from newsq.errors import ConfigError
from newsq.store.database import articles

if TYPE_CHECKING:
    from newsq.store.database import Store

FIELDS = [
    "url", "final_url", "canonical_url", "title", "author", "published", "language", "site",
    "text", "content_hash", "story_id", "duplicate_of", "similarity", "match", "fetched_at",
    "outlets", "paywalled",
]  # fmt: skip
OUTLET_FIELDS = ("site", "url", "fetched_at")


def _utc(when: datetime) -> datetime:
    # SQLite hands back naive times; the store writes UTC
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def iso_published(raw: str | None) -> str | None:
    """A stored ``published`` as ISO 8601 with an offset (a time without one is taken as
    UTC), or a plain ``YYYY-MM-DD`` when only the date is known; None when unreadable."""
    if not raw:
        return None
    text = raw.strip()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return _utc(datetime.fromisoformat(text)).isoformat()
    except ValueError:
        from newsq.clean.metadata import normalise_date  # older stores: whatever pages said

        again = normalise_date(text)
        return iso_published(again) if again and again != text else None


def published_instant(iso: str | None) -> datetime | None:
    """The instant of an :func:`iso_published` value; a plain date is 00:00 UTC that day."""
    if iso is None:
        return None
    return _utc(datetime.fromisoformat(iso))


def published_between(rows: Iterable[dict[str, Any]], since: datetime | None,
                      until: datetime | None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows published at or after ``since`` and before ``until`` (None: no bound);
    with a bound, a row without a readable ``published`` is left out."""
    for row in rows:
        when = published_instant(iso_published(row.get("published")))
        if since is not None and (when is None or when < since):
            continue
        if until is not None and (when is None or when >= until):
            continue
        yield row


def with_outlets(store: Store, rows: Iterable[dict[str, Any]],
                 batch: int = 500) -> Iterator[dict[str, Any]]:  # fmt: skip
    """``rows``, the first copy of each story given ``outlets``: its own copy, then each
    stored duplicate of the story by storage order, one per URL (later copies: None)."""
    it = iter(rows)
    while chunk := list(islice(it, batch)):
        firsts = {r["story_id"] for r in chunk if r.get("duplicate_of") is None}
        copies = _copies(store, sorted(firsts)) if firsts else {}
        for row in chunk:
            outlets = None
            if row.get("duplicate_of") is None:
                outlets = [outlet(row)]
                seen = {row["url"]}
                for copy in copies.get(row["story_id"], ()):
                    if copy["url"] not in seen:
                        seen.add(copy["url"])
                        outlets.append(copy)
            yield {**row, "outlets": outlets}


def outlet(row: dict[str, Any]) -> dict[str, Any]:
    """One entry of a story's ``outlets``: where a copy of it was stored, and when."""
    return {"site": row.get("site"), "url": row["url"], "fetched_at": _utc(row["fetched_at"])}


def _copies(store: Store, story_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The duplicate copies of these stories (``duplicate_of`` set), by story, in storage order."""
    query = (
        sa.select(articles.c.story_id, *(articles.c[name] for name in OUTLET_FIELDS))
        .where(articles.c.story_id.in_(story_ids), articles.c.duplicate_of.is_not(None))
        .order_by(articles.c.id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(query):
            out.setdefault(r.story_id, []).append(outlet(dict(r._mapping)))
    return out


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """The contract's fields of one row: aware UTC times, ``published`` normalised."""
    out = {name: row.get(name) for name in FIELDS}
    out["published"] = iso_published(out["published"])
    if isinstance(out["fetched_at"], datetime):
        out["fetched_at"] = _utc(out["fetched_at"])
    return out


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def record(row: dict[str, Any]) -> dict[str, Any]:
    """The exported form of one stored row (contract's fields, ISO times)."""
    out = _typed(row)
    out["fetched_at"] = _iso(out["fetched_at"])
    if out["outlets"] is not None:
        out["outlets"] = [{k: _iso(v) for k, v in o.items()} for o in out["outlets"]]
    return out


@contextmanager
def _open(path: str | None, mode: str) -> Iterator[IO[Any]]:
    if path is None or path == "-":
        yield sys.stdout.buffer if "b" in mode else sys.stdout
        return
    try:
        binary = "b" in mode
        handle = open(path, mode, encoding=None if binary else "utf-8",  # noqa: SIM115
                      newline=None if binary else "")  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
    except OSError as exc:  # while writing or closing: a full disk, a device that refuses
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def export_store(store: Store, rows: Iterable[dict[str, Any]], fmt: str, path: str | None,
                 warc: str | None = None) -> str:  # fmt: skip
    """Export ``rows`` (and their raw pages to ``warc``); returns a one-line report."""
    rows = with_outlets(store, rows)
    if warc is None:
        count = export(rows, fmt, path)
        return f"exported {count} articles" + (f" to {path}" if path else "")
    if warc == "-":
        raise ConfigError("--warc needs a file name, not stdout")
    if fmt == "parquet" and (path or "-") == "-":
        raise ConfigError("parquet export needs --out FILE")
    if path is not None and path == warc:
        raise ConfigError("--warc and --out must be different files")
    from newsq.store.warc import WarcArchive

    with _open(warc, "wb") as handle:
        archive = WarcArchive(handle, warc, store)
        count = export(archive.archived(rows), fmt, path)
    report = f"exported {count} articles{f' to {path}' if path else ''}; "
    report += f"{archive.written} raw pages to {warc}"
    if archive.missing:
        report += f" ({archive.missing} articles had no kept page: NEWSQ_KEEP_RAW was off)"
    return report


def export(rows: Iterable[dict[str, Any]], fmt: str, path: str | None) -> int:
    """Write ``rows`` in ``fmt`` to ``path`` (stdout when None); returns the count."""
    count = 0
    if fmt == "jsonl":
        with _open(path, "w") as out:
            for row in rows:
                out.write(json.dumps(record(row), ensure_ascii=False) + "\n")
                count += 1
    elif fmt == "csv":
        with _open(path, "w") as out:
            writer = csv.DictWriter(out, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                line = record(row)
                if line["outlets"] is not None:  # a cell holds a string: the list as JSON
                    line["outlets"] = json.dumps(line["outlets"], ensure_ascii=False)
                if line["paywalled"] is not None:  # as in JSON, not Python's True
                    line["paywalled"] = json.dumps(line["paywalled"])
                writer.writerow(line)
                count += 1
    elif fmt == "parquet":
        count = _parquet(rows, path)
    else:
        raise ConfigError(f"unknown export format {fmt!r}")
    return count


def _parquet(rows: Iterable[dict[str, Any]], path: str | None, batch: int = 1000) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("parquet export needs pyarrow: pip install 'newsq[parquet]'") from None
    if path is None or path == "-":
        raise ConfigError("parquet export needs --out FILE")
    stamp = pa.timestamp("us", tz="UTC")
    outlet = pa.struct([("site", pa.string()), ("url", pa.string()), ("fetched_at", stamp)])
    types = {"similarity": pa.float64(), "fetched_at": stamp, "outlets": pa.list_(outlet),
             "paywalled": pa.bool_()}  # fmt: skip
    columns = [(name, types.get(name, pa.string())) for name in FIELDS]
    # ``published`` stays text (it may be a plain date); ``published_at`` is its instant
    columns.insert(FIELDS.index("published") + 1, ("published_at", stamp))
    schema = pa.schema(columns)
    count = 0
    with _open(path, "wb") as out, pq.ParquetWriter(out, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            typed = _typed(row)
            chunk.append({**typed, "published_at": published_instant(typed["published"])})
            if len(chunk) >= batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
                chunk = []
        if chunk or count == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            count += len(chunk)
    return count
