"""``newsq export``: stored articles as JSON Lines, CSV or Parquet, streamed.

Rows come from :meth:`newsq.store.database.Store.iter_articles` in batches and are written as
they arrive (Parquet: one row group per 1000 rows), so a store of any size exports in
constant memory. ``--warc FILE`` writes the kept raw pages in the same pass
(:mod:`newsq.store.warc`).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from newsq.errors import ConfigError

if TYPE_CHECKING:
    from newsq.store.database import Store

FIELDS = [
    "url", "final_url", "canonical_url", "title", "author", "published", "language", "site",
    "text", "content_hash", "story_id", "duplicate_of", "similarity", "match", "fetched_at",
]  # fmt: skip


def record(row: dict[str, Any]) -> dict[str, Any]:
    """The exported form of one stored row (contract's fields, ISO times)."""
    out = {name: row.get(name) for name in FIELDS}
    fetched = out["fetched_at"]
    if isinstance(fetched, datetime):
        if fetched.tzinfo is None:  # SQLite hands back naive times; the store writes UTC
            fetched = fetched.replace(tzinfo=UTC)
        out["fetched_at"] = fetched.isoformat()
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
    with handle:
        yield handle


def export_store(store: Store, rows: Iterable[dict[str, Any]], fmt: str, path: str | None,
                 warc: str | None = None) -> str:  # fmt: skip
    """Export ``rows`` (and their raw pages to ``warc``); returns a one-line report."""
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
                writer.writerow(record(row))
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
    schema = pa.schema([(name, pa.float64() if name == "similarity" else pa.string())
                        for name in FIELDS])  # fmt: skip
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(record(row))
            if len(chunk) >= batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
                chunk = []
        if chunk or count == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            count += len(chunk)
    return count
