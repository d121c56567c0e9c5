"""Weekly compliance summaries (kept) and the school's link to its district

Revision ID: 0301_summaries_weekly
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0301_summaries_weekly'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "weekly_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("period", sa.String(32), nullable=False, unique=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("made_by", sa.String(64), nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("aggregates", JSON, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("send_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("send_error", sa.Text, nullable=True),
        sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "district_link",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("url", sa.String(300), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("school_id", sa.String(36), nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("district_link")
    op.drop_table("weekly_reports")
