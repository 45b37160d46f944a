"""``newsq events``: the store's outbox read in id order, resumable from an event id.

Each article row has one event, written in the row's own transaction
(:meth:`newsq.store.database.Store.save_article`), so an event exists exactly when its
row was committed, and ids commit in order: a consumer that keeps the last id it read
and asks for the events after it misses none and sees none twice.

An ``article`` event is the article's exported record (:func:`newsq.store.export.record`)
as it was stored: its ``outlets`` are its own copy (later ones are ``copy`` events). A
``copy`` event is a new copy of a known story: ``url``, ``story_id``, ``duplicate_of``,
``similarity``, ``site``, ``fetched_at``. Both lead with ``id`` and ``kind``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from newsq.store.database import ARTICLE, articles, events
from newsq.store.export import outlet, record

if TYPE_CHECKING:
    from newsq.store.database import Store

COPY_FIELDS = ("url", "story_id", "duplicate_of", "similarity", "site", "fetched_at")

_COLUMNS = [c for c in articles.c if c.name != "id"]


def event_record(event_id: int, kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """The event of a stored article ``row``, as ``newsq events`` prints it."""
    if kind == ARTICLE:
        own = [outlet(row)] if row.get("duplicate_of") is None else None  # as with_outlets
        return {"id": event_id, "kind": kind, **record({**row, "outlets": own})}
    full = record({**row, "outlets": None})
    return {"id": event_id, "kind": kind, **{name: full[name] for name in COPY_FIELDS}}


def read(store: Store, since: int = 0, *, batch: int = 500) -> Iterator[dict[str, Any]]:
    """The events after event ``since``, in id order, ``batch`` at a time (keyset
    paging on the primary key: constant memory), until there are no more."""
    last = since
    while True:
        query = (
            sa.select(events.c.id, events.c.kind, *_COLUMNS)
            .join_from(events, articles, events.c.article_id == articles.c.id)
            .where(events.c.id > last)
            .order_by(events.c.id)
            .limit(batch)
        )
        with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            last = row.pop("id")
            yield event_record(last, row.pop("kind"), row)
        if len(rows) < batch:
            return


def follow(store: Store, since: int = 0, *, every: float = 1.0, batch: int = 500,
           stop: threading.Event | None = None,
           caught_up: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """:func:`read`, then the events stored later, polling every ``every`` seconds (one
    indexed query a poll), until ``stop`` is set (never, without one) or the caller
    stops reading. ``caught_up()`` runs each time the events so far are all read."""
    stop = stop or threading.Event()
    last = since
    while not stop.is_set():
        for event in read(store, last, batch=batch):
            last = event["id"]
            yield event
            if stop.is_set():
                return
        if caught_up is not None:
            caught_up()
        stop.wait(every)  # a signal handler's stop.set() ends the wait at once
