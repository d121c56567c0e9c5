"""Timetable: students' own OS accounts mapped to their class (the class-teacher notice, 001 §2.7)

Revision ID: 0305_timetable_accounts
Revises: 0301_timetable
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = '0305_timetable_accounts'
down_revision = '0301_timetable'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "student_accounts",
        sa.Column("os_user", sa.String(64), primary_key=True),
        sa.Column("class_id", sa.Integer, sa.ForeignKey("school_classes.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_student_accounts_class_id", "student_accounts", ["class_id"])


def downgrade() -> None:
    op.drop_index("ix_student_accounts_class_id", "student_accounts")
    op.drop_table("student_accounts")
