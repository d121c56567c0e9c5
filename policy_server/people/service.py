"""People: create, find, disable.  Keyword-only over a session; the caller commits."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import LoginSession, Person, PersonClass, PersonRoom, Role, Room, SchoolClass
from policy_server.errors import Conflict, InvalidInput, NotFound
from policy_server.people.auth import hash_password, verify_password

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 8


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters",
                           code="person.weak_password", params={"minimum": MIN_PASSWORD_LENGTH})


def create_person(
    db: Session,
    *,
    username: str,
    role: Role | str,
    password: str,
    actor: str,
    full_name: str = "",
    class_name: str | None = None,
    language: str | None = None,
) -> Person:
    if not USERNAME.match(username):
        raise InvalidInput(
            f"username {username!r} is not allowed: use 2–64 lowercase letters, digits, '.', '_' or '-'",
            code="person.bad_username", params={"username": username},
        )
    roles = [r.value for r in Role]
    if str(role) not in roles:
        raise InvalidInput(f"unknown role {role!r}; choose one of: {', '.join(roles)}",
                           code="person.unknown_role", params={"role": role, "roles": ", ".join(roles)})
    check_password_strength(password)
    if db.scalar(select(Person.id).where(Person.username == username)) is not None:
        raise Conflict(f"a person with username {username!r} already exists; choose another username",
                       code="person.duplicate_username", params={"username": username})
    person = Person(
        username=username, role=str(role), password_hash=hash_password(password),
        full_name=full_name, class_name=class_name, language=language,
    )
    db.add(person)
    db.flush()
    audit(db, actor=actor, action="person.create", target=username, detail={"role": str(role)})
    return person


def get_person_by_username(db: Session, username: str) -> Person | None:
    return db.scalar(select(Person).where(Person.username == username))


def set_password(db: Session, *, username: str, password: str, actor: str) -> Person:
    person = get_person_by_username(db, username)
    if person is None:
        raise NotFound(f"no person with username {username!r}", code="person.not_found",
                       params={"username": username})
    check_password_strength(password)
    person.password_hash = hash_password(password)
    audit(db, actor=actor, action="person.set_password", target=username)
    return person


def disable_person(db: Session, *, username: str, actor: str) -> Person:
    """Block a person's login (002 §4.4: access of someone who left is blocked)."""
    person = get_person_by_username(db, username)
    if person is None:
        raise NotFound(f"no person with username {username!r}", code="person.not_found",
                       params={"username": username})
    person.disabled = True
    audit(db, actor=actor, action="person.disable", target=username)
    return person


def list_people(db: Session) -> list[Person]:
    return list(db.scalars(select(Person).order_by(Person.username)))


# ----------------------------------------------------------------------------- the console (issue 11)
# Accounts are edited, disabled and enabled, never deleted (004 §3.6); every change is audited
# with what changed.  A teacher's rooms (`person_rooms`) and classes (`person_classes`, with
# the class-teacher flag) are the same rows the timetable and the scope read.

CLASS_NAME = re.compile(r"^\w[\w .\-]{0,31}$")
TEMP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read from paper and typed
LANGUAGE_CHOICES = ("ky", "ru", "en")


@dataclass
class PersonRow:
    """One person with their rooms and classes, for the list and the form."""

    person: Person
    rooms: list[Room]
    classes: list[tuple[SchoolClass, bool]]  # (class, is class teacher)

    @property
    def class_teacher_of(self) -> list[str]:
        return [c.name for c, flag in self.classes if flag]

    @property
    def role_label(self) -> str:
        """'class_teacher' for a teacher with a flagged class, else the role."""
        if self.person.role == Role.teacher and self.class_teacher_of:
            return "class_teacher"
        return self.person.role


def get_person(db: Session, person_id: int) -> Person:
    person = db.get(Person, person_id)
    if person is None:
        raise NotFound(f"no person with id {person_id}", code="person.id_not_found",
                       params={"id": person_id})
    return person


def person_row(db: Session, person: Person) -> PersonRow:
    rooms = list(db.scalars(select(Room).join(PersonRoom, PersonRoom.room_id == Room.id)
                            .where(PersonRoom.person_id == person.id).order_by(Room.name)))
    classes = [(c, bool(flag)) for c, flag in db.execute(
        select(SchoolClass, PersonClass.class_teacher)
        .join(PersonClass, PersonClass.class_id == SchoolClass.id)
        .where(PersonClass.person_id == person.id).order_by(SchoolClass.name))]
    return PersonRow(person, rooms, classes)


def people_rows(db: Session, *, query: str = "", role: str = "", state: str = "") -> list[PersonRow]:
    """People for the list: filtered by text (username or name), role and active/disabled.

    Three queries whatever the number of people (people, their rooms, their classes)."""
    stmt = select(Person).order_by(Person.disabled, Person.username)
    if query:
        like = f"%{query.strip().lower()}%"
        stmt = stmt.where(func.lower(Person.username).like(like) | func.lower(Person.full_name).like(like))
    if role == "class_teacher":
        stmt = stmt.where(Person.role == Role.teacher, Person.id.in_(
            select(PersonClass.person_id).where(PersonClass.class_teacher.is_(True))))
    elif role:
        stmt = stmt.where(Person.role == role)
    if state == "active":
        stmt = stmt.where(Person.disabled.is_(False))
    elif state == "disabled":
        stmt = stmt.where(Person.disabled.is_(True))
    people = list(db.scalars(stmt))
    ids = [p.id for p in people]
    rooms: dict[int, list[Room]] = {i: [] for i in ids}
    classes: dict[int, list[tuple[SchoolClass, bool]]] = {i: [] for i in ids}
    if ids:
        for pid, room in db.execute(select(PersonRoom.person_id, Room)
                                    .join(Room, Room.id == PersonRoom.room_id)
                                    .where(PersonRoom.person_id.in_(ids)).order_by(Room.name)):
            rooms[pid].append(room)
        for pid, klass, flag in db.execute(
                select(PersonClass.person_id, SchoolClass, PersonClass.class_teacher)
                .join(SchoolClass, SchoolClass.id == PersonClass.class_id)
                .where(PersonClass.person_id.in_(ids)).order_by(SchoolClass.name)):
            classes[pid].append((klass, bool(flag)))
    return [PersonRow(p, rooms[p.id], classes[p.id]) for p in people]


def parse_class_names(text: str) -> list[str]:
    """'7-А, 8-Б;9В' → ['7-А', '8-Б', '9В'] (each checked; duplicates dropped, order kept)."""
    names: list[str] = []
    for raw in re.split(r"[,;\n]", text or ""):
        name = raw.strip()
        if not name:
            continue
        if not CLASS_NAME.match(name):
            raise InvalidInput(
                f"class name {name!r} is not allowed: up to 32 letters, digits, space, '.', '-'",
                code="class.bad_name", params={"name": name})
        if name not in names:
            names.append(name)
    return names


def ensure_class(db: Session, *, name: str, actor: str) -> SchoolClass:
    klass = db.scalar(select(SchoolClass).where(SchoolClass.name == name))
    if klass is None:
        klass = SchoolClass(name=name)
        db.add(klass)
        db.flush()
        audit(db, actor=actor, action="class.create", target=name)
    return klass


def list_classes(db: Session) -> list[SchoolClass]:
    return list(db.scalars(select(SchoolClass).order_by(SchoolClass.name)))


def _check_role(role: str) -> None:
    roles = [r.value for r in Role]
    if role not in roles:
        raise InvalidInput(f"unknown role {role!r}; choose one of: {', '.join(roles)}",
                           code="person.unknown_role", params={"role": role, "roles": ", ".join(roles)})


def _set_links(db: Session, person: Person, *, room_ids: list[int], class_names: list[str],
               class_teacher_of: list[str], actor: str) -> dict:
    """Replace a person's rooms and classes; returns what changed (for the audit record)."""
    known_rooms = ({r.id: r.name for r in db.scalars(select(Room).where(Room.id.in_(room_ids)))}
                   if room_ids else {})
    missing = [r for r in room_ids if r not in known_rooms]
    if missing:
        raise InvalidInput(f"room ids {missing} do not exist; choose rooms from the list",
                           code="person.unknown_room", params={"rooms": ", ".join(map(str, missing))})
    for name in class_teacher_of:
        if name not in class_names:
            class_names = [*class_names, name]
    before = person_row(db, person)
    old_rooms = sorted(r.name for r in before.rooms)
    old_classes = sorted(c.name for c, _ in before.classes)
    old_ct = sorted(before.class_teacher_of)
    db.execute(delete(PersonRoom).where(PersonRoom.person_id == person.id))
    db.execute(delete(PersonClass).where(PersonClass.person_id == person.id))
    for room_id in sorted(set(room_ids)):
        db.add(PersonRoom(person_id=person.id, room_id=room_id))
    for name in class_names:
        klass = ensure_class(db, name=name, actor=actor)
        db.add(PersonClass(person_id=person.id, class_id=klass.id, class_teacher=name in class_teacher_of))
    db.flush()
    changes = {}
    if sorted(known_rooms.values()) != old_rooms:
        changes["rooms"] = {"from": old_rooms, "to": sorted(known_rooms.values())}
    if sorted(class_names) != old_classes:
        changes["classes"] = {"from": old_classes, "to": sorted(class_names)}
    if sorted(class_teacher_of) != old_ct:
        changes["class_teacher_of"] = {"from": old_ct, "to": sorted(class_teacher_of)}
    return changes


def new_temporary_password() -> str:
    raw = "".join(secrets.choice(TEMP_ALPHABET) for _ in range(12))
    return "-".join(raw[i:i + 4] for i in range(0, 12, 4))


def create_account(db: Session, *, actor: str, username: str, role: str, full_name: str = "",
                   language: str | None = None, room_ids: list[int] | None = None,
                   class_names: list[str] | None = None, class_teacher_of: list[str] | None = None
                   ) -> tuple[Person, str]:
    """A new account with a temporary password (returned once, to be printed and handed over;
    it must be changed at the first login)."""
    _check_role(role)
    if language and language not in LANGUAGE_CHOICES:
        language = None
    temporary = new_temporary_password()
    person = create_person(db, username=username, role=role, password=temporary, actor=actor,
                           full_name=full_name.strip(), language=language)
    person.must_change_password = True
    changes = _set_links(db, person, room_ids=room_ids or [], class_names=class_names or [],
                         class_teacher_of=class_teacher_of or [], actor=actor)
    if changes:
        audit(db, actor=actor, action="person.links", target=username, detail=changes)
    return person, temporary


def update_account(db: Session, *, actor: str, person_id: int, role: str, full_name: str = "",
                   language: str | None = None, room_ids: list[int] | None = None,
                   class_names: list[str] | None = None, class_teacher_of: list[str] | None = None,
                   actor_id: int | None = None) -> Person:
    person = get_person(db, person_id)
    _check_role(role)
    if actor_id == person.id and role != person.role:
        raise InvalidInput("you cannot change your own role; ask another responsible person",
                           code="person.own_role")
    if language and language not in LANGUAGE_CHOICES:
        language = None
    changes: dict = {}
    for name, new in (("role", role), ("full_name", full_name.strip()), ("language", language or None)):
        old = getattr(person, name)
        if old != new:
            changes[name] = {"from": old, "to": new}
            setattr(person, name, new)
    changes.update(_set_links(db, person, room_ids=room_ids or [], class_names=class_names or [],
                              class_teacher_of=class_teacher_of or [], actor=actor))
    if changes:
        audit(db, actor=actor, action="person.update", target=person.username, detail=changes)
    return person


def _end_sessions(db: Session, person: Person) -> int:
    return db.execute(update(LoginSession).where(LoginSession.person_id == person.id,
                                                 LoginSession.revoked.is_(False))
                      .values(revoked=True)).rowcount or 0


def set_disabled(db: Session, *, actor: str, person_id: int, disabled: bool,
                 actor_id: int | None = None) -> Person:
    """Disable (002 §4.4: block the access of someone who left; their login sessions end at
    once) or enable again.  Never deletes: the audit trail keeps naming them."""
    person = get_person(db, person_id)
    if disabled and actor_id == person.id:
        raise InvalidInput("you cannot disable your own account", code="person.own_disable")
    if person.disabled == disabled:
        return person
    person.disabled = disabled
    ended = _end_sessions(db, person) if disabled else 0
    audit(db, actor=actor, action="person.disable" if disabled else "person.enable",
          target=person.username, detail={"sessions_ended": ended} if disabled else {})
    return person


def reset_password(db: Session, *, actor: str, person_id: int) -> tuple[Person, str]:
    """A printed temporary password: the old one stops working, the person's login sessions
    end, and the new one must be changed at the next login."""
    person = get_person(db, person_id)
    temporary = new_temporary_password()
    person.password_hash = hash_password(temporary)
    person.must_change_password = True
    ended = _end_sessions(db, person)
    audit(db, actor=actor, action="person.reset_password", target=person.username,
          detail={"sessions_ended": ended})
    return person, temporary


def change_own_password(db: Session, *, person: Person, current: str, new: str, repeat: str) -> Person:
    if not verify_password(person.password_hash, current):
        raise InvalidInput("the current password is wrong", code="person.wrong_current_password")
    if new != repeat:
        raise InvalidInput("the two new passwords differ; type the same one twice",
                           code="person.passwords_differ")
    if new == current:
        raise InvalidInput("the new password must differ from the temporary one",
                           code="person.password_unchanged")
    check_password_strength(new)
    person.password_hash = hash_password(new)
    person.must_change_password = False
    audit(db, actor=person.username, action="person.change_own_password", target=person.username)
    return person
