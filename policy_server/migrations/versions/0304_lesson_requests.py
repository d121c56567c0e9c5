"""Lessons: unblock requests a lesson's teacher forwarded to the responsible person

Revision ID: 0304_lesson_requests
Revises: 0302_lessons

`request_id` names a `filter_requests` row (revision 0301_filtering, another branch): no foreign
key, so that the two branches apply in any order.
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0304_lesson_requests'
down_revision = '0302_lessons'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lesson_request_forwards",
        sa.Column("request_id", sa.Integer, primary_key=True),
        sa.Column("lesson_id", sa.String(12), sa.ForeignKey("lessons.id"), nullable=False),
        sa.Column("forwarded_by", sa.String(64), nullable=False),
        sa.Column("forwarded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lesson_request_forwards_lesson_id", "lesson_request_forwards", ["lesson_id"])


def downgrade() -> None:
    op.drop_index("ix_lesson_request_forwards_lesson_id", "lesson_request_forwards")
    op.drop_table("lesson_request_forwards")
