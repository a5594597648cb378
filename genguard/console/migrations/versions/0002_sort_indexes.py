"""Indexes for the queue's probability sort and provenance filter (queue pages stay index-only at 100,000 items).

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_queue_probability", "items", ["queue_id", "synthetic_probability"])
    op.create_index("ix_items_queue_provenance", "items", ["queue_id", "provenance_verdict", "suspicion"])


def downgrade() -> None:
    op.drop_index("ix_items_queue_provenance", "items")
    op.drop_index("ix_items_queue_probability", "items")
