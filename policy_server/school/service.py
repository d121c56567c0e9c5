"""School and rooms.  A server serves one school (the first row of `schools`)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import PersonRoom, Room, School
from policy_server.errors import InvalidInput, NotFound

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


def get_school(db: Session) -> School | None:
    return db.scalar(select(School).order_by(School.id).limit(1))


def ensure_school(db: Session, *, name: str, actor: str, district: str = "") -> School:
    school = get_school(db)
    if school is None:
        school = School(name=name, district=district)
        db.add(school)
        db.flush()
        audit(db, actor=actor, action="school.create", target=name)
    return school


def find_room(db: Session, name: str) -> Room | None:
    return db.scalar(select(Room).where(Room.name == name))


def get_room(db: Session, name: str) -> Room:
    room = find_room(db, name)
    if room is None:
        known = ", ".join(db.scalars(select(Room.name).order_by(Room.name))) or "none yet"
        raise NotFound(f"room {name!r} does not exist (rooms: {known}); create it first with "
                       "`kalkan-server demo` or the room form")
    return room


def ensure_room(db: Session, *, name: str, actor: str) -> Room:
    if not ROOM_NAME.match(name):
        raise InvalidInput(f"room name {name!r} is not allowed: letters, digits, space, '.', '_' or '-'")
    room = find_room(db, name)
    if room is None:
        school = get_school(db)
        if school is None:
            raise NotFound("no school is set up yet; run `kalkan-server demo` or create the school first")
        room = Room(school_id=school.id, name=name)
        db.add(room)
        db.flush()
        audit(db, actor=actor, action="room.create", target=name)
    return room


def list_rooms(db: Session) -> list[Room]:
    return list(db.scalars(select(Room).order_by(Room.name)))


def link_person_to_room(db: Session, *, person_id: int, room: str, actor: str) -> Room:
    """A teacher works in `room` (table `person_rooms`): they see its seats' incidents and
    workstations (000 §7.3, docs/security.md).  Idempotent; the caller commits."""
    room_row = get_room(db, room)
    if db.get(PersonRoom, (person_id, room_row.id)) is None:
        db.add(PersonRoom(person_id=person_id, room_id=room_row.id))
        db.flush()
        audit(db, actor=actor, action="person.room_linked", target=f"person:{person_id}",
              detail={"room": room})
    return room_row
