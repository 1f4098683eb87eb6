"""Items, embeddings, users and interactions.

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
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("image_path", sa.String(512), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("label", sa.String(255)),
        sa.Column("title", sa.Text),
        sa.Column("meta", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("key", name="uq_items_key"),
    )
    op.create_index("ix_items_label", "items", ["label"])
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("item_id", "model", name="uq_embeddings_item_model"),
    )
    op.create_index("ix_embeddings_model", "embeddings", ["model"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("key", name="uq_users_key"),
    )
    op.create_table(
        "interactions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("weight", sa.Float),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_interactions_user_ts", "interactions", ["user_id", "ts"])
    op.create_index("ix_interactions_item_id", "interactions", ["item_id"])


def downgrade() -> None:
    op.drop_table("interactions")
    op.drop_table("users")
    op.drop_table("embeddings")
    op.drop_table("items")
