"""What the outbox costs a store write: ``Store.save_article`` with its event and without.

    python -m bench.events_bench [--n 2000] [--rounds 5] [--database-url URL]

Each round stores ``--n`` new articles (a 2 KB text each) into a fresh store twice,
once as the store does (the article, its URL's record and its event in one
transaction) and once with the event left out (the write as it was before events),
alternated so that the machine's other load falls on both. Prints ms per article of
each side, best and median of the rounds. Default: a SQLite file in a temporary
folder; ``--database-url postgresql://...`` a database of that server (its tables are
dropped first: give an empty one).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from newsq.store.database import Store, make_engine, metadata


def _row(url: str) -> dict[str, Any]:
    return {"url": url, "final_url": url, "canonical_url": None, "title": "T", "author": None,
            "published": None, "language": "en", "site": "example", "text": "word " * 400,
            "content_hash": f"h-{url}", "story_id": url, "duplicate_of": None,
            "similarity": 1.0, "match": "new", "fetched_at": datetime.now(UTC)}  # fmt: skip


def _round(url: str, n: int, events: bool) -> float:
    """Seconds per article of ``n`` writes into a fresh store at ``url``."""
    engine = make_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    store = Store.from_url(url)
    if not events:
        store._emit = lambda *_: None  # type: ignore[method-assign]
    started = time.perf_counter()
    for i in range(n):
        page = f"https://news.example/{i}"
        store.save_article(_row(page), {"url": page, "state": "stored"})
    took = time.perf_counter() - started
    store.close()
    return took / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="articles per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side")
    parser.add_argument("--database-url", help="a PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        times: dict[str, list[float]] = {"with events": [], "without": []}
        for _ in range(args.rounds):
            times["with events"].append(_round(url, args.n, events=True))
            times["without"].append(_round(url, args.n, events=False))
    print(f"{sa.engine.make_url(url).get_backend_name()}, {args.n} articles x {args.rounds}")
    for side, took in times.items():
        print(f"  {side:12s} best {1000 * min(took):.3f} ms/article, "
              f"median {1000 * statistics.median(took):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
