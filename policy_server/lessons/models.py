"""Lesson tables (revision 0302_lessons).  The `lessons` table is the truth; the policy bundle
carries the running lessons and their bans to the agents of the lesson's room only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class Lesson(Base):
    __tablename__ = "lessons"
    __table_args__ = (Index("ix_lessons_room_end", "room_id", "ends_at"),
                      Index("ix_lessons_teacher_end", "teacher_id", "ends_at"))

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    teacher_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    period_id: Mapped[int | None] = mapped_column(ForeignKey("timetable_periods.id"), nullable=True)
    class_id: Mapped[int | None] = mapped_column(ForeignKey("school_classes.id"), nullable=True)
    mode: Mapped[str] = mapped_column(String(16), default="open")
    scene: Mapped[str] = mapped_column(String(64), default="")
    allow_list: Mapped[list[str]] = mapped_column(JsonType, default=list)  # the scene's sites
    allowed_sites: Mapped[list[str]] = mapped_column(JsonType, default=list)  # allowed for this lesson
    extended_min: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)  # the hard end (period end + extensions)
    planned_end: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # ended early
    # live controls, carried to the room's agents in the bundle; all end with the lesson
    locked_seats: Mapped[list[str]] = mapped_column(JsonType, default=list)  # ["*"] = every seat
    lock_message: Mapped[str] = mapped_column(String(200), default="")
    lock_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # after the countdown
    eyes_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    summarised_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class LessonBan(Base):
    """Internet forbidden for a seat or a student until the lesson ends (000 §7.3)."""

    __tablename__ = "lesson_bans"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    lesson_id: Mapped[str] = mapped_column(ForeignKey("lessons.id"), index=True)
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class LessonActivity(Base):
    """What a seat did during a lesson (blocked attempt, request, hand raised, page open).

    Minors' data (001 §2.15): kept only until the lesson's summary is made, then deleted."""

    __tablename__ = "lesson_activity"
    __table_args__ = (Index("ix_lesson_activity_lesson", "lesson_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lesson_id: Mapped[str] = mapped_column(ForeignKey("lessons.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # blocked, request, hand, open, alert
    host: Mapped[str] = mapped_column(String(253), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class Scene(Base):
    """A teacher's named allow-list ("scene"), reused from lesson to lesson."""

    __tablename__ = "lesson_scenes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    domains: Mapped[list[str]] = mapped_column(JsonType, default=list)


class Preset(Base):
    """What one click starts: the teacher's saved mode and scene."""

    __tablename__ = "lesson_presets"

    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), default="open")
    scene_id: Mapped[int | None] = mapped_column(ForeignKey("lesson_scenes.id"), nullable=True)


class LessonRequestForward(Base):
    """An unblock request the lesson's teacher passed on to the responsible person before the
    lesson ended (`policy_server.lessons.requests`).  Revision 0304_lesson_requests."""

    __tablename__ = "lesson_request_forwards"

    # a filter_requests id (no foreign key: that table is another migration branch's)
    request_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lesson_id: Mapped[str] = mapped_column(ForeignKey("lessons.id"), index=True)
    forwarded_by: Mapped[str] = mapped_column(String(64))
    forwarded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
