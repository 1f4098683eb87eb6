"""Model registry: trained two-tower models, their files and metrics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("base_model", sa.String(64), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("params", sa.JSON),
        sa.Column("metrics", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("kind", "version", name="uq_models_kind_version"),
    )


def downgrade() -> None:
    op.drop_table("models")
