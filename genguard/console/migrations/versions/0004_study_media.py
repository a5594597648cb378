"""A study's media (image or audio): studies made before audio studies existed are image studies.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("studies", sa.Column("media", sa.String(8), nullable=False, server_default="image"))


def downgrade() -> None:
    with op.batch_alter_table("studies") as b:
        b.drop_column("media")
