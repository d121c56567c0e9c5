"""People: create, find, disable.  Keyword-only over a session; the caller commits."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Person, Role
from policy_server.errors import Conflict, InvalidInput, NotFound
from policy_server.people.auth import hash_password

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
