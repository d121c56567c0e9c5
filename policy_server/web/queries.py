"""Read-only queries the pages need beyond the domain services.

Every change goes through the domain services (`incidents.service` writes the
timeline and the audit record), and what a person may see is the services' business
(`scope.Viewer`); this module only reads small things the pages show: the school's
language, room names, workstations with their room, the ISUO access log with its room.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from policy_server.db.models import IsuoAccess, Person, Room, School, Workstation


def school_language(db: Session) -> str | None:
    """The school's default page language (Kyrgyz unless the school chose otherwise)."""
    return db.scalar(select(School.default_language).order_by(School.id).limit(1))


def room_names(db: Session, room_ids: frozenset[int] | set[int]) -> list[str]:
    """The names of these rooms, sorted (a teacher's rooms on the incident list)."""
    if not room_ids:
        return []
    return sorted(db.scalars(select(Room.name).where(Room.id.in_(sorted(room_ids)))))


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
