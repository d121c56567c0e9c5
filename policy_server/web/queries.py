"""Read-only queries the pages need beyond the domain services.

Every change goes through the domain services (`incidents.service` writes the
timeline and the audit record); this module only reads, in the shapes the pages
show: counts per status, a teacher's rooms, workstations with their room, the
ISUO access log with its room.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from policy_server.db.models import (
    Incident,
    IsuoAccess,
    Person,
    Room,
    School,
    Workstation,
)
from policy_server.policies.service import current_bundle


def school_language(db: Session) -> str | None:
    """The school's default page language (Kyrgyz unless the school chose otherwise)."""
    return db.scalar(select(School.default_language).order_by(School.id).limit(1))


def teacher_rooms(db: Session, person: Person) -> list[str]:
    """The rooms a teacher holds lessons in, from the policy in force (000 §7.3).

    A teacher is linked to a lab by the lessons of the current policy bundle
    (`lessons[].teacher` is the teacher's username), so the responsible person
    sets it up in one place: the lesson schedule.
    """
    bundle = current_bundle(db)
    return sorted({lesson.room for lesson in bundle.lessons if lesson.teacher == person.username})


def agent_ids_in_rooms(db: Session, rooms: list[str]) -> list[str]:
    if not rooms:
        return []
    query = select(Workstation.id).join(Room, Workstation.room_id == Room.id).where(Room.name.in_(rooms))
    return list(db.scalars(query))


def incident_counts(db: Session, *, agent_ids: list[str] | None = None) -> dict[str, int]:
    """How many incidents are in each status (for the summary line; no personal data)."""
    query = select(Incident.status, func.count(Incident.id)).group_by(Incident.status)
    if agent_ids is not None:
        query = query.where(Incident.agent_id.in_(agent_ids))
    return {status: count for status, count in db.execute(query)}


def count_matching(db: Session, *, status: str | None, severity: str | None,
                   agent_ids: list[str] | None) -> int:
    query = select(func.count(Incident.id))
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    if agent_ids is not None:
        query = query.where(Incident.agent_id.in_(agent_ids))
    return db.scalar(query) or 0


def workstations_by_id(db: Session, ids: set[str]) -> dict[str, Workstation]:
    if not ids:
        return {}
    query = select(Workstation).options(selectinload(Workstation.room)).where(Workstation.id.in_(ids))
    return {ws.id: ws for ws in db.scalars(query)}


def active_people(db: Session) -> list[Person]:
    """Who an incident can be assigned to: enabled admins and teachers."""
    query = select(Person).where(Person.disabled.is_(False), Person.role.in_(["admin", "teacher"]))
    return list(db.scalars(query.order_by(Person.role, Person.username)))


def isuo_access(db: Session, *, limit: int, offset: int) -> tuple[list[tuple[IsuoAccess, str | None]], int]:
    """Newest first, each row with its workstation's room name; and the total."""
    query = (
        select(IsuoAccess, Room.name)
        .outerjoin(Workstation, IsuoAccess.agent_id == Workstation.id)
        .outerjoin(Room, Workstation.room_id == Room.id)
        .order_by(IsuoAccess.started_at.desc(), IsuoAccess.id.desc())
        .limit(limit).offset(offset)
    )
    rows = [(access, room) for access, room in db.execute(query)]
    total = db.scalar(select(func.count(IsuoAccess.id))) or 0
    return rows, total
