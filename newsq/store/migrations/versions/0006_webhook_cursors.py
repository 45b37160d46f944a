"""Webhook delivery: per target, the last event id it took, so a restart resumes there.

Revision ID: 0006_webhook_cursors
Revises: 0005_events
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_webhook_cursors"
down_revision = "0005_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_cursors",
        sa.Column("target", sa.Text, primary_key=True),
        sa.Column("last_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("delivered", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_cursors")
