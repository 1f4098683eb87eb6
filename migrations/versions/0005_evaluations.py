"""Evaluations: each `recsys evaluate` report, so `auto` can serve the measured best.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON),
        sa.Column("strategies", sa.JSON),
        sa.Column("report", sa.JSON),
    )
    op.create_index("ix_evaluations_split", "evaluations", ["split"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_split", table_name="evaluations")
    op.drop_table("evaluations")
