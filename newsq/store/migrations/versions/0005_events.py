"""The outbox: one event per stored article row, written in its transaction.

Revision ID: 0005_events
Revises: 0004_paywalled
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_events"
down_revision = "0004_paywalled"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("article_id", sa.Integer, sa.ForeignKey("articles.id"), nullable=False),
        sa.UniqueConstraint("article_id", name="uq_events_article"),
        sqlite_autoincrement=True,
    )
    # the rows stored before have their events, in storage order: a duplicate copy is
    # the row stored without text (as Store.save_article tells them apart)
    op.execute(
        "INSERT INTO events (kind, article_id) SELECT CASE WHEN text IS NULL "
        "THEN 'copy' ELSE 'article' END, id FROM articles ORDER BY id"
    )


def downgrade() -> None:
    op.drop_table("events")
