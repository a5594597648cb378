"""When each clip of an audio trial was first sent to the rater (answers given before a clip could be heard are
refused); trials made before have none and count as not yet played.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("left_sent_at", sa.DateTime(), nullable=True))
    op.add_column("trials", sa.Column("right_sent_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as b:
        b.drop_column("right_sent_at")
        b.drop_column("left_sent_at")
