"""Read-only queries the pages need beyond the domain services.

Every change goes through the domain services (`incidents.service` writes the
timeline and the audit record); this module only reads, in the shapes the pages
show: what a person may see (`Scope`), incidents within it, counts per status,
workstations with their room, the ISUO access log with its room.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, func, or_, select, true
from sqlalchemy.orm import Session, selectinload

from policy_server.db.models import (
    Incident,
    IsuoAccess,
    Notification,
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


@dataclass(frozen=True)
class Scope:
    """Which incidents a person may see: everything (`whole_school`), or a teacher's share:
    the incidents of the workstations in their rooms, and those they were told about
    as class teacher (001 §2.7)."""

    whole_school: bool
    rooms: tuple[str, ...] = ()
    agent_ids: tuple[str, ...] = ()
    incident_ids: tuple[int, ...] = ()

    def condition(self) -> ColumnElement[bool]:
        if self.whole_school:
            return true()
        return or_(Incident.agent_id.in_(self.agent_ids), Incident.id.in_(self.incident_ids))

    def allows(self, incident: Incident) -> bool:
        return self.whole_school or incident.agent_id in self.agent_ids or incident.id in self.incident_ids


WHOLE_SCHOOL = Scope(whole_school=True)


def teacher_scope(db: Session, person: Person) -> Scope:
    rooms = teacher_rooms(db, person)
    agent_ids: list[str] = []
    if rooms:
        query = select(Workstation.id).join(Room, Workstation.room_id == Room.id).where(Room.name.in_(rooms))
        agent_ids = list(db.scalars(query))
    told = db.scalars(select(Notification.incident_id).where(Notification.person_id == person.id))
    return Scope(whole_school=False, rooms=tuple(rooms), agent_ids=tuple(agent_ids),
                 incident_ids=tuple(sorted(set(told))))


def _filtered(query: Select, scope: Scope, status: str | None, severity: str | None) -> Select:
    query = query.where(scope.condition())
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    return query


def list_incidents(db: Session, scope: Scope, *, status: str | None, severity: str | None,
                   limit: int, offset: int) -> list[Incident]:
    """Newest first, like `incidents.service.list_incidents`, within a person's scope."""
    query = select(Incident).order_by(Incident.last_seen_at.desc(), Incident.id.desc())
    return list(db.scalars(_filtered(query, scope, status, severity).limit(limit).offset(offset)))


def count_incidents(db: Session, scope: Scope, *, status: str | None, severity: str | None) -> int:
    return db.scalar(_filtered(select(func.count(Incident.id)), scope, status, severity)) or 0


def incident_counts(db: Session, scope: Scope) -> dict[str, int]:
    """How many incidents are in each status (for the summary line; no personal data)."""
    query = select(Incident.status, func.count(Incident.id)).where(scope.condition())
    query = query.group_by(Incident.status)
    return {status: count for status, count in db.execute(query)}


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
