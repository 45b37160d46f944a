"""Feed origins: the feed a URL was found in, its entry's title and date; due index.

Revision ID: 0003_feed_origin
Revises: 0002_pages
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_feed_origin"
down_revision = "0002_pages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite adds the columns in place, PostgreSQL as plain ALTERs
    with op.batch_alter_table("urls") as batch:
        batch.add_column(sa.Column("feed", sa.Text))
        batch.add_column(sa.Column("feed_title", sa.Text))
        batch.add_column(sa.Column("feed_published", sa.DateTime(timezone=True)))
    # beat asks for the due feeds every tick: with thousands, not a scan of them all
    op.create_index("ix_feeds_next_due", "feeds", ["next_due"])


def downgrade() -> None:
    op.drop_index("ix_feeds_next_due", table_name="feeds")
    with op.batch_alter_table("urls") as batch:
        batch.drop_column("feed_published")
        batch.drop_column("feed_title")
        batch.drop_column("feed")
