"""Impressions (what was shown), experiments (A/B splits between strategies), and the request id
that ties a click to the list it came from.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "impressions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("user_key", sa.String(255)),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("experiment", sa.String(64)),
        sa.Column("arm", sa.String(32)),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_impressions_request_item", "impressions", ["request_id", "item_id"])
    op.create_index("ix_impressions_shown_at", "impressions", ["shown_at"])
    op.create_index("ix_impressions_experiment_arm", "impressions", ["experiment", "arm"])
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("strategies", sa.JSON, nullable=False),
        sa.Column("split", sa.JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
    )
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("request_id", sa.String(32)))
    op.create_index("ix_interactions_request_id", "interactions", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_interactions_request_id", table_name="interactions")
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("request_id")
    op.drop_table("experiments")
    op.drop_index("ix_impressions_experiment_arm", table_name="impressions")
    op.drop_index("ix_impressions_shown_at", table_name="impressions")
    op.drop_index("ix_impressions_request_item", table_name="impressions")
    op.drop_table("impressions")
