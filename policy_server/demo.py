"""`kalkan-server demo`: a demo school to try Kalkan with (idempotent).

Creates "Demo School No. 1" with the lab "lab-1", student groups for two classes with a
class teacher each, and three logins (admin, teacher, director); the teacher works in "lab-1"
(`person_rooms`), so they see that room's incidents and workstations.  The passwords are random
on the first run and kept in `demo-logins.json` (mode 0600) in the state dir, so running the
command again prints the same logins and only adds a fresh enrolment code.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.agents.service import create_enrollment_code
from policy_server.filtering.lists import STARTER_LISTS, update_lists
from policy_server.filtering.starting import apply_starting_policy
from policy_server.people.service import create_person, get_person_by_username
from policy_server.policies.service import amend_policy, current_bundle
from policy_server.school.service import ensure_room, ensure_school, link_person_to_room

DEMO_SCHOOL = "Demo School No. 1"
DEMO_ROOM = "lab-1"
DEMO_PEOPLE = (  # username, role, full name, class of which they are the class teacher
    ("admin", "admin", "Demo Responsible Person", None),
    ("teacher", "teacher", "Demo Teacher", "7a"),
    ("director", "director", "Demo Director", None),
)
ACTOR = "system:demo"


@dataclass
class DemoResult:
    school: str
    room: str
    logins: dict[str, str]  # username → password
    enrollment_code: str


def _load_logins(path: Path) -> dict[str, str]:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def _save_logins(path: Path, logins: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(logins, fh, indent=1)


def _demo_policy(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
    return bundle.model_copy(update={
        "school": DEMO_SCHOOL,
        "groups": [
            protocol.Group(name="class-7a", kind=protocol.GroupKind.student, os_groups=["class-7a"],
                           class_teacher="teacher"),
            protocol.Group(name="student", kind=protocol.GroupKind.student, os_groups=["students"]),
            protocol.Group(name="teacher", kind=protocol.GroupKind.teacher, os_groups=["teachers"]),
        ],
    })


def seed_demo(db: Session, state_dir: Path) -> DemoResult:
    """Seed the demo school; the caller commits."""
    ensure_school(db, name=DEMO_SCHOOL, actor=ACTOR, district="Demo district")
    ensure_room(db, name=DEMO_ROOM, actor=ACTOR)
    if current_bundle(db).school != DEMO_SCHOOL:
        amend_policy(db, actor=ACTOR, comment="demo school policy", change=_demo_policy)
        amend_policy(db, actor=ACTOR, comment="starting policy for a Kyrgyz school (000 §8.1, 001 §3.3)",
                     change=apply_starting_policy)
    if not current_bundle(db).filtering.index_sha256:
        # the category lists shipped in the repository (a small UT1 subset): the demo filters by
        # category with nothing beside the checkout (`kalkan-server lists update --source URL`: the full ones)
        update_lists(db, state_dir=state_dir, actor=ACTOR, source=str(STARTER_LISTS))
    logins_path = state_dir / "demo-logins.json"
    logins = _load_logins(logins_path)
    for username, role, full_name, class_name in DEMO_PEOPLE:
        if get_person_by_username(db, username) is None:
            password = secrets.token_urlsafe(12)
            create_person(db, username=username, role=role, password=password, actor=ACTOR,
                          full_name=full_name, class_name=class_name)
            logins[username] = password
    _save_logins(logins_path, logins)
    # The demo teacher works in the demo lab: they see its incidents and workstations.
    teacher = get_person_by_username(db, "teacher")
    if teacher is not None:
        link_person_to_room(db, person_id=teacher.id, room=DEMO_ROOM, actor=ACTOR)
    _seed_timetable(db)
    _seed_isuo_register(db)
    code = create_enrollment_code(db, actor=ACTOR, room=DEMO_ROOM, uses=50)
    return DemoResult(school=DEMO_SCHOOL, room=DEMO_ROOM, logins=logins, enrollment_code=code)


# A school day of 45-minute periods with 15-minute breaks, Monday to Friday, so that the teacher's
# "now" and "next" have something to show whenever the demo is started on a weekday.
DEMO_PERIODS = [(f"{h:02d}:00", f"{h:02d}:45") for h in range(8, 18)]
DEMO_CLASS = "7-A"


def _seed_timetable(db: Session) -> None:
    """The demo teacher's periods in the demo lab with class 7-A (once)."""
    from policy_server.scope import Viewer
    from policy_server.timetable import service as timetable

    system = Viewer.system()
    if timetable.list_periods(db, system):
        return
    for weekday in range(1, 6):  # Monday .. Friday (the timetable counts from 1 here)
        for starts, ends in DEMO_PERIODS:
            timetable.add_period(db, system, weekday=weekday, starts=starts, ends=ends, room=DEMO_ROOM,
                                 school_class=DEMO_CLASS, teacher="teacher")


def _seed_isuo_register(db: Session) -> None:
    """One ISUO specialist in the register, the obligation's original in the personal file (once)."""
    from policy_server.isuo import service as isuo
    from policy_server.scope import Viewer

    if isuo.list_users(db):
        return
    system = Viewer.system()
    user = isuo.save_user(db, viewer=system, full_name="Aigul Demo", position="ISUO specialist",
                          isuo_role="specialist", logins="aigul.isuo", order_number="12-k",
                          order_date="2026-09-01")
    isuo.record_obligation(db, viewer=system, user_id=user.id, signed_on="2026-09-01",
                           instructed_by="Director", scan=None, scan_name="", file_number="PF-12",
                           state_dir=Path("."))
