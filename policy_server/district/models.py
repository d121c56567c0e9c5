"""The district server's side: enrolled schools and the weekly aggregates they sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class DistrictSchool(Base):
    """A school of the district.  Made with a one-time enrolment code (stored hashed); the
    school enrols with it and its public key, like an agent enrols with the school."""

    __tablename__ = "district_schools"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    code_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)  # PEM; None until enrolled
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    enrolled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class DistrictWeek(Base):
    """One school's aggregates for one period (counts and rates only: 002 §3.1), stored once."""

    __tablename__ = "district_weeks"
    __table_args__ = (UniqueConstraint("school_id", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("district_schools.id"), index=True)
    period: Mapped[str] = mapped_column(String(32), index=True)
    aggregates: Mapped[dict[str, Any]] = mapped_column(JsonType)
    signature: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
