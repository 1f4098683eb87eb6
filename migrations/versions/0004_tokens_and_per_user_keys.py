"""API tokens (only their hashes), and idempotency keys unique per user rather than globally.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    )
    # one live token per name; revoked ones stay for the record
    op.create_index("ix_api_tokens_name", "api_tokens", ["name"])
    with op.batch_alter_table("interactions") as batch:
        batch.drop_constraint("uq_interactions_event_key", type_="unique")
        batch.create_unique_constraint("uq_interactions_user_event_key", ["user_id", "event_key"])


def downgrade() -> None:
    # Per-user keys may repeat across users; the global constraint keeps the first of each.
    op.execute(
        "UPDATE interactions SET event_key = NULL WHERE event_key IS NOT NULL AND id NOT IN "
        "(SELECT min(id) FROM interactions WHERE event_key IS NOT NULL GROUP BY event_key)"
    )
    with op.batch_alter_table("interactions") as batch:
        batch.drop_constraint("uq_interactions_user_event_key", type_="unique")
        batch.create_unique_constraint("uq_interactions_event_key", ["event_key"])
    op.drop_index("ix_api_tokens_name", table_name="api_tokens")
    op.drop_table("api_tokens")
