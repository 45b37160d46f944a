"""The store on SQLite and PostgreSQL: schema by Alembic, idempotent writes."""

from __future__ import annotations

from datetime import UTC, datetime

from newsq.store.database import OUTCOME_FIELDS, Store


def _row(url: str, story: str, text: str | None, dup: str | None = None) -> dict[str, object]:
    return {
        "url": url, "final_url": url, "canonical_url": None, "title": "T", "author": None,
        "published": "2026-11-27", "language": "en", "site": "example", "text": text,
        "content_hash": f"h-{url}", "story_id": story, "duplicate_of": dup,
        "similarity": 1.0 if dup is None else 0.9, "match": "new" if dup is None else "near",
        "fetched_at": datetime.now(UTC),
    }  # fmt: skip


def test_writes_are_idempotent(database_url: str) -> None:
    store = Store.from_url(database_url)
    Store.from_url(database_url).close()  # a second start finds the schema in place
    first = _row("http://a.example/1", "s1", "body")
    copy = _row("http://b.example/1", "s1", None, dup="http://a.example/1")
    assert store.save_article(first, {"url": first["url"], "state": "stored"})
    assert not store.save_article(first, {"url": first["url"], "state": "stored"})
    assert store.save_article(copy, {"url": copy["url"], "state": "duplicate"})
    store.record_outcome({"url": "http://c.example/x", "state": "failed", "reason": "http_error"})
    store.record_outcome({"url": "http://c.example/x", "state": "failed", "reason": "timeout"})

    assert [r["url"] for r in store.iter_articles()] == ["http://a.example/1"]
    assert len(list(store.iter_articles(unique_only=False))) == 2
    assert store.state_counts() == {"stored": 1, "duplicate": 1, "failed": 1}
    assert store.failure_counts() == {"timeout": 1}
    (story,) = store.stories()
    assert story["copies"] == 2 and story["outlets"] == ["example"]
    store.close()


def test_outcomes_listed_by_state_and_reason_page_by_page(database_url: str) -> None:
    store = Store.from_url(database_url)
    ends = [("failed", "timeout"), ("skipped", "no_content"), ("failed", "http_error"),
            ("failed", "timeout"), ("stored", None), ("failed", "timeout")]  # fmt: skip
    for n, (state, reason) in enumerate(ends):
        store.record_outcome({"url": f"http://e.example/{n}", "state": state, "reason": reason,
                              "detail": f"d{n}", "attempts": n})  # fmt: skip
    timeouts = list(store.iter_outcomes(["failed"], reason="timeout", batch=2))
    assert [(r["url"], r["detail"], r["attempts"]) for r in timeouts] == [
        ("http://e.example/0", "d0", 0), ("http://e.example/3", "d3", 3),
        ("http://e.example/5", "d5", 5),
    ]  # fmt: skip
    assert tuple(timeouts[0]) == OUTCOME_FIELDS
    both = store.iter_outcomes(["failed", "skipped"], batch=1)
    assert [r["url"][-1] for r in both] == ["0", "1", "2", "3", "5"]
    assert list(store.iter_outcomes(["skipped"], reason="timeout")) == []
    store.close()
