"""Retention of the notices that name a student (001 §2.15), run by `policy_server.db.retention`.

Two kinds of notice tell a class teacher (001 §2.7) about one student: a lesson's repeated
attempts to open blocked sites (`lesson.repeated_attempts`: the students' names from the
seating plan, else their OS accounts or seats, with their counts) and a new incident about a
student of the class (`incident.class_teacher`: OS account and seat).  Past the retention
days their text is written again without the student — the room, the class, the counts, the
incident and the dates stay, so the teacher's list still reads — in the reader's language,
and `personal_removed_at` is set: the page says why, and each notice is done once.

The subject names no student (the class, the rule's title) and stays.  A notice's e-mail,
already sent, cannot be taken back; `email_error` names the teacher's address, not a child.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server.db.models import Incident, Person, Room, SchoolClass
from policy_server.notices.models import Notice
from policy_server.web.i18n import DEFAULT_LANGUAGE, N_, translate

REPEATED = "lesson.repeated_attempts"
INCIDENT = "incident.class_teacher"
NAMING_KINDS = (REPEATED, INCIDENT)

REPEATED_BODY = N_("Lesson in %(room)s, class %(cls)s: repeated attempts to open blocked sites, "
                   "per student: %(attempts)s. See the lesson's summary.")
INCIDENT_BODY = N_("A student of your class: %(title)s. Incident #%(id)s in the console.")
NONE = "—"


def _old_naming(cutoff: datetime):
    return (Notice.kind.in_(NAMING_KINDS), Notice.created_at < cutoff, Notice.personal_removed_at.is_(None))


def retention_count(db: Session, *, cutoff: datetime) -> int:
    """How many notices past the cut-off still name a student; changes nothing."""
    return db.scalar(select(func.count()).select_from(Notice).where(*_old_naming(cutoff))) or 0


def apply_retention(db: Session, *, cutoff: datetime, now: datetime) -> int:
    """Write the old naming notices again without the student (the caller commits)."""
    notices = list(db.scalars(select(Notice).where(*_old_naming(cutoff)).order_by(Notice.id)))
    if not notices:
        return 0
    languages = dict(db.execute(select(Person.id, Person.language)
                                .where(Person.id.in_({n.person_id for n in notices}))).all())
    for notice in notices:
        language = languages.get(notice.person_id) or DEFAULT_LANGUAGE
        if notice.kind == REPEATED:
            params = _repeated_params(db, notice)
            notice.body = translate(language, REPEATED_BODY, **params)
        else:
            params = _incident_params(db, notice, language)
            notice.body = translate(language, INCIDENT_BODY, **params)
        notice.params = params  # the student's name, account and seat are no longer among them
        notice.personal_removed_at = now
    db.flush()
    return len(notices)


def _linked_id(link: str, prefix: str) -> str | None:
    found = re.fullmatch(rf"/{prefix}/([A-Za-z0-9_-]+)", link or "")
    return found.group(1) if found else None


def _repeated_params(db: Session, notice: Notice) -> dict:
    """Room, class and the per-student counts.  Notices stored before revision 0306 have no
    params: the room and class come from the lesson the notice links to, the counts from its
    summary while that still has them (this runs before the summaries lose them), else from
    the "(N)" after each name in the old text."""
    params = notice.params or {}
    if "attempts" in params:
        attempts = [int(a) for a in params["attempts"]]
        return {"room": params.get("room", ""), "cls": params.get("cls") or NONE,
                "attempts": ", ".join(map(str, attempts)) or NONE, "counts": attempts}
    from policy_server.lessons.models import Lesson

    lesson_id = _linked_id(notice.link, "lessons")
    lesson = db.get(Lesson, lesson_id) if lesson_id else None
    room = db.get(Room, lesson.room_id) if lesson else None
    cls = db.get(SchoolClass, lesson.class_id) if lesson and lesson.class_id else None
    repeated = (lesson.summary or {}).get("repeated") if lesson else None
    if repeated:
        attempts = [int(r.get("attempts", 0)) for r in repeated]
    else:
        text = notice.body.replace(room.name, "") if room else notice.body  # "Lab (2)" is no count
        attempts = [int(n) for n in re.findall(r"\((\d+)\)", text)]
    return {"room": room.name if room else "", "cls": cls.name if cls else NONE,
            "attempts": ", ".join(map(str, attempts)) or NONE, "counts": attempts}


def _incident_params(db: Session, notice: Notice, language: str) -> dict:
    """The incident's number and title (hosts and rules, never a student's account: see
    "personal data" in policy_server/rules), from the params or, for older notices, the
    incident the notice links to."""
    params = notice.params or {}
    if "title" in params and "id" in params:
        return {"title": params["title"], "id": params["id"], "cls": params.get("cls", "")}
    from policy_server.web.presenters import incident_title

    incident_id = _linked_id(notice.link, "incidents")
    incident = db.get(Incident, int(incident_id)) if incident_id and incident_id.isdigit() else None
    if incident is None:
        return {"title": NONE, "id": incident_id or NONE, "cls": ""}
    return {"title": incident_title(language, incident.rule, incident.params or {}, incident.title),
            "id": incident.id, "cls": ""}
