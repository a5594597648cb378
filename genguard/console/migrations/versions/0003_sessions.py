"""Server-side sessions, disabled accounts, failed log-ins kept in the database; code-point-order names on
PostgreSQL; the queue's sort indexes end on the id.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


#: the queue's sort indexes, ending on the id every sort ends on: SQLite's indexes carry the rowid anyway, but a
#: PostgreSQL index does not, and without it a deep page (OFFSET 49,950) reads 50,000 table rows for their ids
SORT_INDEXES = {
    "ix_items_queue_suspicion": ["queue_id", "suspicion"],
    "ix_items_queue_decision": ["queue_id", "decision", "suspicion"],
    "ix_items_queue_verdict": ["queue_id", "verdict", "suspicion"],
    "ix_items_queue_assignee": ["queue_id", "assignee_id", "suspicion"],
    "ix_items_queue_name": ["queue_id", "name"],
    "ix_items_queue_probability": ["queue_id", "synthetic_probability"],
    "ix_items_queue_provenance": ["queue_id", "provenance_verdict", "suspicion"],
}


def _sort_indexes(with_id: bool) -> None:
    for name, cols in SORT_INDEXES.items():
        op.drop_index(name, "items")
        op.create_index(name, "items", cols + (["id"] if with_id else []))


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_login_failures_at", "login_failures", ["at"])
    op.create_index("ix_login_failures_account_at", "login_failures", ["account", "at"])
    op.create_index("ix_login_failures_address_at", "login_failures", ["address", "at"])
    if op.get_bind().dialect.name == "postgresql":
        # the queue's name sort in code-point order, as on SQLite, whatever the database's locale (a locale
        # collation ignores punctuation, so '<x>.png' would sort among the x's); the index follows the column
        op.execute('ALTER TABLE items ALTER COLUMN name TYPE varchar(255) COLLATE "C"')
    _sort_indexes(with_id=True)
    # the undecided items in review order: a reviewer's default view. PostgreSQL does not take `decision IS NULL`
    # as an equality, so the decision index cannot give that order and a deep page would filter table rows
    undecided = sa.text("decision IS NULL")
    op.create_index("ix_items_queue_undecided", "items", ["queue_id", "suspicion", "id"],
                    postgresql_where=undecided, sqlite_where=undecided)


def downgrade() -> None:
    op.drop_index("ix_items_queue_undecided", "items")
    _sort_indexes(with_id=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE items ALTER COLUMN name TYPE varchar(255) COLLATE "default"')
    op.drop_table("login_failures")
    op.drop_table("sessions")
    with op.batch_alter_table("users") as b:
        b.drop_column("disabled")
