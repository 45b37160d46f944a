"""Articles say whether they are paywalled (JSON-LD ``isAccessibleForFree``).

Revision ID: 0004_paywalled
Revises: 0003_feed_origin
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_paywalled"
down_revision = "0003_feed_origin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # null for the rows stored before: their pages were not asked
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("paywalled", sa.Boolean))


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("paywalled")
