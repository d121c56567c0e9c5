"""Lessons: lessons, their bans, lesson-time activity (kept until the summary), scenes, presets

Revision ID: 0302_lessons
Revises: 0301_timetable
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0302_lessons'
down_revision = '0301_timetable'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "lessons",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("teacher_id", sa.Integer, sa.ForeignKey("people.id"), nullable=False),
        sa.Column("period_id", sa.Integer, sa.ForeignKey("timetable_periods.id"), nullable=True),
        sa.Column("class_id", sa.Integer, sa.ForeignKey("school_classes.id"), nullable=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("scene", sa.String(64), nullable=False, server_default=""),
        sa.Column("allow_list", JSON, nullable=False),
        sa.Column("allowed_sites", JSON, nullable=False),
        sa.Column("extended_min", sa.Integer, nullable=False, server_default="0"),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_seats", JSON, nullable=False),
        sa.Column("lock_message", sa.String(200), nullable=False, server_default=""),
        sa.Column("lock_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("eyes_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", JSON, nullable=True),
        sa.Column("summarised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lessons_room_end", "lessons", ["room_id", "ends_at"])
    op.create_index("ix_lessons_teacher_end", "lessons", ["teacher_id", "ends_at"])
    op.create_table(
        "lesson_bans",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("lesson_id", sa.String(12), sa.ForeignKey("lessons.id"), nullable=False, index=True),
        sa.Column("seat", sa.String(64), nullable=True),
        sa.Column("os_user", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(300), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "lesson_activity",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("lesson_id", sa.String(12), sa.ForeignKey("lessons.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seat", sa.String(64), nullable=True),
        sa.Column("os_user", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("host", sa.String(253), nullable=False, server_default=""),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("ix_lesson_activity_lesson", "lesson_activity", ["lesson_id", "at"])
    op.create_table(
        "lesson_scenes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("domains", JSON, nullable=False),
    )
    op.create_table(
        "lesson_presets",
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("scene_id", sa.Integer, sa.ForeignKey("lesson_scenes.id"), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("lesson_presets")
    op.drop_table("lesson_scenes")
    op.drop_index("ix_lesson_activity_lesson", "lesson_activity")
    op.drop_table("lesson_activity")
    op.drop_table("lesson_bans")
    op.drop_index("ix_lessons_teacher_end", "lessons")
    op.drop_index("ix_lessons_room_end", "lessons")
    op.drop_table("lessons")
