"""Raw pages as fetched: each kept page's HTTP head and body bytes, for replayable WARCs.

Revision ID: 0007_raw_http
Revises: 0006_webhook_cursors
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_raw_http"
down_revision = "0006_webhook_cursors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pages") as batch:
        batch.add_column(sa.Column("http_head", sa.Text))
        batch.add_column(sa.Column("body_zlib", sa.LargeBinary))


def downgrade() -> None:
    with op.batch_alter_table("pages") as batch:
        batch.drop_column("body_zlib")
        batch.drop_column("http_head")
