"""Timetable tables (revision 0301_timetable): weekly periods, the school's internet-use
schedule per school year (001 §2.1–2.4), the room layout and the seating plan per class."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, UtcDateTime, utcnow


class Period(Base):
    """One weekly period: on `weekday` (0 = Monday) from `starts` to `ends` (school-local
    "HH:MM"), `teacher` teaches `school_class` in `room`."""

    __tablename__ = "timetable_periods"
    __table_args__ = (Index("ix_periods_room_day", "room_id", "weekday"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    weekday: Mapped[int] = mapped_column(Integer)
    starts: Mapped[str] = mapped_column(String(5))
    ends: Mapped[str] = mapped_column(String(5))
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    class_id: Mapped[int | None] = mapped_column(ForeignKey("school_classes.id"), nullable=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class InternetBand(Base):
    """The school's internet-use schedule, approved per school year (001 §2.1–2.4): students
    may use the internet on `weekday` between `starts` and `ends` (school-local)."""

    __tablename__ = "internet_schedule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_year: Mapped[str] = mapped_column(String(9))  # "2026-2027"
    weekday: Mapped[int] = mapped_column(Integer)
    starts: Mapped[str] = mapped_column(String(5))
    ends: Mapped[str] = mapped_column(String(5))
    approved_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RoomSeat(Base):
    """Where a seat stands in its room (row and column of the seat map)."""

    __tablename__ = "room_seats"
    __table_args__ = (UniqueConstraint("room_id", "seat"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    seat: Mapped[str] = mapped_column(String(64))
    row: Mapped[int] = mapped_column(Integer, default=0)
    col: Mapped[int] = mapped_column(Integer, default=0)


class SeatingEntry(Base):
    """Who of `school_class` sits at `seat` of `room` (labs with shared OS accounts): an event at
    that seat during the class's period names the student."""

    __tablename__ = "seating_plan"
    __table_args__ = (UniqueConstraint("class_id", "room_id", "seat"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("school_classes.id"))
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    seat: Mapped[str] = mapped_column(String(64))
    student: Mapped[str] = mapped_column(String(120))


class StudentAccount(Base):
    """A student's own OS account → their class (labs with a login per student; labs with shared
    accounts use the seating plan instead).  Revision 0305_timetable_accounts."""

    __tablename__ = "student_accounts"

    os_user: Mapped[str] = mapped_column(String(64), primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("school_classes.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
