"""login_attempts: login throttling counted in the database, shared by every server process

Revision ID: 0402_login_attempts
Revises: 0401_health_probe
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0402_login_attempts'
down_revision = '0401_health_probe'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_login_attempts_key_at", "login_attempts", ["key", "at"])
    op.create_index("ix_login_attempts_at", "login_attempts", ["at"])


def downgrade() -> None:
    op.drop_table("login_attempts")
