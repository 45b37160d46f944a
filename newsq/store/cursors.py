"""Webhook cursors: per target, the last event id it answered 2xx to, kept in the store.

The cursor only moves forward, and only after a target took the event, so a deliverer
that dies, or a target that is down for hours, resumes at the first event not taken:
at least once, in event id order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from newsq.store.database import _insert, events, now, webhook_cursors

if TYPE_CHECKING:
    from newsq.store.database import Store


@dataclass(frozen=True)
class Cursor:
    """Where a webhook target's delivery stands."""

    target: str
    last_id: int
    """The last event id the target took; it is sent the events after it."""
    delivered: int
    last_error: str | None = None
    last_error_at: datetime | None = None
    pending: int = 0
    """Events stored after ``last_id``: not delivered yet."""


def load(store: Store, target: str) -> Cursor:
    """``target``'s cursor, made at 0 (the first event) when it has none."""
    stmt = _insert(store.engine, webhook_cursors).on_conflict_do_nothing()
    query = sa.select(webhook_cursors).where(webhook_cursors.c.target == target)
    with store.engine.begin() as conn:
        row = conn.execute(query).first()
        if row is None:
            conn.execute(stmt, {"target": target, "last_id": 0, "delivered": 0,
                                "updated_at": now()})  # fmt: skip
            row = conn.execute(query).one()
    return _cursor(row._mapping)


def advance(store: Store, target: str, event_id: int, taken: int = 1) -> None:
    """``target`` took event ``event_id`` (and ``taken`` events up to it, counted): the
    cursor moves to it, never back."""
    stmt = (
        sa.update(webhook_cursors)
        .where(webhook_cursors.c.target == target, webhook_cursors.c.last_id < event_id)
        .values(last_id=event_id, delivered=webhook_cursors.c.delivered + taken, updated_at=now())
    )
    with store.engine.begin() as conn:
        conn.execute(stmt)


def failed(store: Store, target: str, error: str) -> None:
    """Note ``target``'s last failure (what ``newsq stats`` shows)."""
    stamp = now()
    stmt = (
        sa.update(webhook_cursors)
        .where(webhook_cursors.c.target == target)
        .values(last_error=error[:500], last_error_at=stamp, updated_at=stamp)
    )
    with store.engine.begin() as conn:
        conn.execute(stmt)


def pending(store: Store, after: int) -> int:
    """Events stored after event ``after`` (a range of the primary key)."""
    query = sa.select(sa.func.count()).select_from(events).where(events.c.id > after)
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def every(store: Store) -> list[Cursor]:
    """Every target's cursor, with its pending events, by target."""
    query = sa.select(webhook_cursors).order_by(webhook_cursors.c.target)
    with store.engine.connect() as conn:
        rows = [r._mapping for r in conn.execute(query)]
    return [_cursor(row, pending(store, row["last_id"])) for row in rows]


def _cursor(row: sa.RowMapping, left: int = 0) -> Cursor:
    return Cursor(target=row["target"], last_id=row["last_id"], delivered=row["delivered"],
                  last_error=row["last_error"], last_error_at=row["last_error_at"],
                  pending=left)  # fmt: skip
