"""The school's database, as SQLAlchemy models.

Portable between SQLite (the embedded default) and PostgreSQL: UUIDs are
stored as 36-character strings, JSON as JSON (JSONB on PostgreSQL), and every
time is UTC and timezone-aware when read back (`UtcDateTime`).

Nothing here is ever deleted by the application (004 §3.6): incidents are
resolved, tokens revoked, people disabled; every admin action leaves an
`AuditRecord`, and every incident change a `TimelineEntry`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JsonType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Role(StrEnum):
    admin = "admin"  # the school's IT responsible person
    teacher = "teacher"
    director = "director"
    district = "district"  # aggregates only, no personal data (002 §3.1)


class IncidentStatus(StrEnum):
    new = "new"
    acknowledged = "acknowledged"
    resolved = "resolved"


class School(Base):
    __tablename__ = "schools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    district: Mapped[str] = mapped_column(String(200), default="")
    default_language: Mapped[str] = mapped_column(String(5), default="ky")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    rooms: Mapped[list[Room]] = relationship(back_populates="school")


class Room(Base):
    """A computer lab."""

    __tablename__ = "rooms"
    __table_args__ = (UniqueConstraint("school_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    name: Mapped[str] = mapped_column(String(100))

    school: Mapped[School] = relationship(back_populates="rooms")
    workstations: Mapped[list[Workstation]] = relationship(back_populates="room")


class Person(Base):
    """Someone with a server login.  Students have none: they act from the workstation."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))  # Role
    password_hash: Mapped[str] = mapped_column(String(255))
    language: Mapped[str | None] = mapped_column(String(5), nullable=True)
    class_name: Mapped[str | None] = mapped_column(String(32), nullable=True)  # class teacher of
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # a temporary password (reset by the responsible person) must be changed at the next login
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)  # 0101


class LoginSession(Base):
    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie value
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class EnrollmentCode(Base):
    __tablename__ = "enrollment_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id"), nullable=True)
    uses_left: Mapped[int] = mapped_column(Integer, default=1)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")


class Workstation(Base):
    """An enrolled agent on a lab seat."""

    __tablename__ = "workstations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # agent_id (UUID)
    hostname: Mapped[str] = mapped_column(String(253))
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id"), nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the bearer token
    token_revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    os: Mapped[str] = mapped_column(String(128), default="")
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    protocol_version: Mapped[int] = mapped_column(Integer, default=1)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    health: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # last heartbeat data

    room: Mapped[Room | None] = relationship(back_populates="workstations")


class Event(Base):
    """Every event an agent sent, stored once by its id (delivery is at-least-once)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_agent_time", "agent_id", "occurred_at"),
        Index("ix_events_type_time", "type", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("workstations.id"))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    os_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    clauses: Mapped[list[str]] = mapped_column(JsonType, default=list)


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_dedup", "dedup_key", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    severity: Mapped[str] = mapped_column(String(16))
    clauses: Mapped[list[str]] = mapped_column(JsonType, default=list)
    dedup_key: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.new)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("workstations.id"), nullable=True)
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    window_ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)  # a person's own words
    # a resolution the system made: a code and its params, said in the reader's language
    # (incidents.service.resolution_text; revision 0106)
    resolution_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resolution_params: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    # the class whose timetable period ran in the seat's room when it began (incidents.engine
    # `_classes_at`): its teachers see the incident (scope; revision 0107)
    class_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    timeline: Mapped[list[TimelineEntry]] = relationship(
        back_populates="incident", order_by="TimelineEntry.id"
    )


class IncidentEvent(Base):
    """Which events an incident is made of."""

    __tablename__ = "incident_events"
    __table_args__ = (Index("ix_incident_events_event", "event_id"),)

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), primary_key=True)


class TimelineEntry(Base):
    """Every change of an incident, with who made it ("system" for rules)."""

    __tablename__ = "incident_timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # opened, event_added, acknowledged, assigned, resolved…
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)

    incident: Mapped[Incident] = relationship(back_populates="timeline")


class AuditRecord(Base):
    """One admin action: who, what, on what (004 §3.6)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class PolicyVersion(Base):
    """Append-only history of the school's policy bundle; the newest row is in force."""

    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    bundle: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    comment: Mapped[str] = mapped_column(String(300), default="")


class IsuoAccess(Base):
    """ISUO access log: who used ISUO from which seat and when (no content)."""

    __tablename__ = "isuo_access"
    __table_args__ = (Index("ix_isuo_agent_start", "agent_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16), default="proxy")  # proxy | import
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("workstations.id"), nullable=True)
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    isuo_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str] = mapped_column(String(253))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    start_event_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class Notification(Base):
    """Someone must be told about an incident (e.g. the class teacher, 001 §2.7).

    `person_id` is set when the person could be found (a group's class teacher by
    username); otherwise the notice is addressed to a role and shows to everyone in it.
    """

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_person", "person_id", "read_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(32))  # who it is for: class_teacher, admin, …
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


# --- who works where: shared by people (issue 11), the timetable and lessons (issue 13) and
# --- the scope (policy_server/scope.py).  Revision 0004.

class SchoolClass(Base):
    """A class of students, e.g. `7-Б` (its class teacher is a `PersonClass` with the flag)."""

    __tablename__ = "school_classes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PersonRoom(Base):
    """A teacher works in this room (lessons, seat map, incidents of its seats: 000 §7.3)."""

    __tablename__ = "person_rooms"

    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), primary_key=True)


class PersonClass(Base):
    """A teacher teaches this class; `class_teacher` marks the class teacher (001 §2.7)."""

    __tablename__ = "person_classes"

    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("school_classes.id"), primary_key=True)
    class_teacher: Mapped[bool] = mapped_column(Boolean, default=False)
