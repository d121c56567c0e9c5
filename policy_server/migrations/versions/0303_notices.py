"""Notices: a person's notices (badge and list), their e-mail address, the school's SMTP settings

Revision ID: 0303_notices
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0303_notices'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False, server_default=""),
        sa.Column("link", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("emailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("email_error", sa.String(300), nullable=False, server_default=""),
    )
    op.create_index("ix_notices_person_read", "notices", ["person_id", "read_at"])
    op.create_table(
        "notice_addresses",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
    )
    op.create_table(
        "smtp_settings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("sender", sa.String(254), nullable=False),
        sa.Column("username", sa.String(254), nullable=False, server_default=""),
        sa.Column("password", sa.String(254), nullable=False, server_default=""),
        sa.Column("starttls", sa.Boolean, nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    op.drop_table("smtp_settings")
    op.drop_table("notice_addresses")
    op.drop_index("ix_notices_person_read", "notices")
    op.drop_table("notices")
