"""The weekly summaries a school made: kept, never deleted (004 §3.6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class WeeklyReport(Base):
    """One period's summary, frozen when made (the figures as `reports.figures.Summary.as_dict`),
    its district aggregates, and how sending them to the district went."""

    __tablename__ = "weekly_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(32), unique=True)  # "2026-W49"
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    made_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    made_by: Mapped[str] = mapped_column(String(64), default="system")
    summary: Mapped[dict[str, Any]] = mapped_column(JsonType)
    aggregates: Mapped[dict[str, Any]] = mapped_column(JsonType)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # accepted by the district
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    send_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    mailed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # e-mailed as PDF


class DistrictLink(Base):
    """This school's enrolment at its district server (one row): where, the pinned certificate,
    the id the district gave us and our Ed25519 signing key (the district holds the public half)."""

    __tablename__ = "district_link"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(300))
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: plain HTTP (tests)
    school_id: Mapped[str] = mapped_column(String(36))
    private_key: Mapped[str] = mapped_column(Text)  # PEM, PKCS#8
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
