"""Who works where: classes, a person's rooms and classes (shared by people, timetable, scope)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "school_classes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(32), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "person_rooms",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id"), primary_key=True),
    )
    op.create_table(
        "person_classes",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("class_id", sa.Integer, sa.ForeignKey("school_classes.id"), primary_key=True),
        sa.Column("class_teacher", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("person_classes")
    op.drop_table("person_rooms")
    op.drop_table("school_classes")
