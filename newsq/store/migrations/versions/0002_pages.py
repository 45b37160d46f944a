"""Raw pages: the compressed HTML of each stored copy, kept when NEWSQ_KEEP_RAW=1.

Revision ID: 0002_pages
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_pages"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pages",
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("final_url", sa.Text),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_type", sa.Text),
        sa.Column("html_zlib", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("url", "content_hash", name="pk_pages"),
    )


def downgrade() -> None:
    op.drop_table("pages")
