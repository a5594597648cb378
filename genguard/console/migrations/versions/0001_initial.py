"""Initial schema: users, queues, items, audit events, studies, stimuli, trials.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "queues",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("overlay_path", sa.Text),
        sa.Column("provenance_verdict", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(32)),
        sa.Column("synthetic_probability", sa.Float),
        sa.Column("suspicion", sa.Float, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("decision", sa.String(16)),
        sa.Column("note", sa.Text),
        sa.Column("assignee_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("decided_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("decided_at", sa.DateTime),
    )
    op.create_index("ix_items_queue_suspicion", "items", ["queue_id", "suspicion"])
    op.create_index("ix_items_queue_decision", "items", ["queue_id", "decision", "suspicion"])
    op.create_index("ix_items_queue_verdict", "items", ["queue_id", "verdict", "suspicion"])
    op.create_index("ix_items_queue_assignee", "items", ["queue_id", "assignee_id", "suspicion"])
    op.create_index("ix_items_queue_name", "items", ["queue_id", "name"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("field", sa.String(16), nullable=False),
        sa.Column("old", sa.Text),
        sa.Column("new", sa.Text),
    )
    op.create_index("ix_audit_events_item_id", "audit_events", ["item_id"])
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "stimuli",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
    )
    op.create_index("ix_stimuli_study_id", "stimuli", ["study_id"])
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rater_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("attention", sa.Integer, nullable=False),
        sa.Column("left_id", sa.Integer, sa.ForeignKey("stimuli.id"), nullable=False),
        sa.Column("right_id", sa.Integer, sa.ForeignKey("stimuli.id")),
        sa.Column("answer", sa.String(8)),
        sa.Column("answered_at", sa.DateTime),
    )
    op.create_index("ix_trials_study_rater_pos", "trials", ["study_id", "rater_id", "position"])


def downgrade() -> None:
    for t in ("trials", "stimuli", "studies", "audit_events", "items", "queues", "users"):
        op.drop_table(t)
