"""Retrieval: cluster ids on items, idempotency keys on interactions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("cluster", sa.Integer))
    op.create_index("ix_items_cluster", "items", ["cluster"])
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("event_key", sa.String(128)))
        batch.create_unique_constraint("uq_interactions_event_key", ["event_key"])


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_constraint("uq_interactions_event_key", type_="unique")
        batch.drop_column("event_key")
    op.drop_index("ix_items_cluster", table_name="items")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("cluster")
