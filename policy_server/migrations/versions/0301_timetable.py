"""Timetable: weekly periods, internet-use schedule per school year, room layout, seating plan

Revision ID: 0301_timetable
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0301_timetable'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timetable_periods",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("weekday", sa.Integer, nullable=False),
        sa.Column("starts", sa.String(5), nullable=False),
        sa.Column("ends", sa.String(5), nullable=False),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("class_id", sa.Integer, sa.ForeignKey("school_classes.id"), nullable=True),
        sa.Column("teacher_id", sa.Integer, sa.ForeignKey("people.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_periods_room_day", "timetable_periods", ["room_id", "weekday"])
    op.create_table(
        "internet_schedule",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("weekday", sa.Integer, nullable=False),
        sa.Column("starts", sa.String(5), nullable=False),
        sa.Column("ends", sa.String(5), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "room_seats",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("seat", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer, nullable=False, server_default="0"),
        sa.Column("col", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("room_id", "seat"),
    )
    op.create_table(
        "seating_plan",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("class_id", sa.Integer, sa.ForeignKey("school_classes.id"), nullable=False),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("seat", sa.String(64), nullable=False),
        sa.Column("student", sa.String(120), nullable=False),
        sa.UniqueConstraint("class_id", "room_id", "seat"),
    )


def downgrade() -> None:
    op.drop_table("seating_plan")
    op.drop_table("room_seats")
    op.drop_table("internet_schedule")
    op.drop_index("ix_periods_room_day", "timetable_periods")
    op.drop_table("timetable_periods")
