"""Alembic environment: runs on the connection ``ensure_schema`` hands over, or on
``sqlalchemy.url`` when called from the alembic command line."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from newsq.store.database import metadata

config = context.config
connection = config.attributes.get("connection")


def run(conn: sa.Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        run(conn)
