"""Notice tables (revisions 0303_notices, 0306_notices_retention): notices to a person, their
e-mail address, and the school's SMTP settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class Notice(Base):
    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_person_read", "person_id", "read_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    kind: Mapped[str] = mapped_column(String(32))  # lesson.summary, class_teacher.attempts, …
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    emailed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    email_error: Mapped[str] = mapped_column(String(300), default="")
    # What subject and body were made from (revision 0306): retention writes the text again
    # without the student from these, in the reader's language (notices/retention.py).
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    # Set once retention took the student's name, account and seat out (001 §2.15).
    personal_removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class NoticeAddress(Base):
    """Where a person's notices are e-mailed (optional)."""

    __tablename__ = "notice_addresses"

    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))


class SmtpSettings(Base):
    """The school's outgoing mail server (one row)."""

    __tablename__ = "smtp_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer, default=587)
    sender: Mapped[str] = mapped_column(String(254))
    username: Mapped[str] = mapped_column(String(254), default="")
    password: Mapped[str] = mapped_column(String(254), default="")
    starttls: Mapped[bool] = mapped_column(Boolean, default=True)
