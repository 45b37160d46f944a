"""Initial schema: articles, urls, feeds.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "articles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("final_url", sa.Text),
        sa.Column("canonical_url", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("author", sa.Text),
        sa.Column("published", sa.String(40)),
        sa.Column("language", sa.String(16)),
        sa.Column("site", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("story_id", sa.String(64), nullable=False),
        sa.Column("duplicate_of", sa.Text),
        sa.Column("similarity", sa.Float, nullable=False),
        sa.Column("match", sa.String(16), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("url", "content_hash", name="uq_articles_url_hash"),
    )
    op.create_index("ix_articles_story", "articles", ["story_id"])
    op.create_index("ix_articles_fetched", "articles", ["fetched_at"])
    op.create_table(
        "urls",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("detail", sa.Text),
        sa.Column("story_id", sa.String(64)),
        sa.Column("duplicate_of", sa.Text),
        sa.Column("similarity", sa.Float),
        sa.Column("match", sa.String(16)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_urls_state", "urls", ["state"])
    op.create_table(
        "feeds",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("every_s", sa.Float, nullable=False),
        sa.Column("min_every_s", sa.Float, nullable=False),
        sa.Column("max_every_s", sa.Float, nullable=False),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("next_due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_polled", sa.DateTime(timezone=True)),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_new", sa.Integer, nullable=False),
        sa.Column("polls", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feeds")
    op.drop_table("urls")
    op.drop_table("articles")
