"""The end-of-lesson summary: what was blocked, requested, allowed, who was banned, alerts.

Made once, when the lesson ends (on time or by its teacher).  The lesson's activity rows
(minors' browsing, 001 §2.15) are deleted once the summary holds the counts; the summary
keeps hosts and counts per seat/student, not URLs.  Repeated attempts by one student (at
least `REPEATED_ATTEMPTS` blocked requests to non-educational sites) become a notice to the
class teacher (001 §2.7) and the responsible person."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from policy_server.db.models import Person, PersonClass, Role, Room, SchoolClass
from policy_server.lessons.models import Lesson, LessonActivity, LessonBan
from policy_server.timetable import service as timetable
from policy_server.web.i18n import N_

REPEATED_ATTEMPTS = 5


def who(seat: str | None, os_user: str | None, seating: dict[str, str]) -> str:
    """The student's name from the seating plan, else the OS account, else the seat."""
    if seat and seat in seating:
        return seating[seat]
    return os_user or (seat or "?")


def build(db: Session, lesson: Lesson) -> dict:
    seating = timetable.seating_of(db, lesson.class_id, lesson.room_id)
    acts = list(db.scalars(select(LessonActivity).where(LessonActivity.lesson_id == lesson.id)
                           .order_by(LessonActivity.at)))
    blocked_hosts: Counter[str] = Counter()
    by_student: dict[str, Counter[str]] = defaultdict(Counter)
    requested: list[dict] = []
    alerts: list[dict] = []
    hands = 0
    for a in acts:
        person = who(a.seat, a.os_user, seating)
        if a.kind == "blocked":
            blocked_hosts[a.host] += 1
            by_student[person][a.host] += 1
        elif a.kind == "request":
            requested.append({"who": person, "seat": a.seat or "", "host": a.host})
        elif a.kind == "alert":
            alerts.append({"who": person, "seat": a.seat or "", "host": a.host,
                           "lists": list(a.detail.get("lists", []))[:5]})
        elif a.kind == "hand":
            hands += 1
    bans = [{"seat": b.seat or "", "os_user": b.os_user or "",
             "who": who(b.seat, b.os_user, seating) if (b.seat or b.os_user) else "",
             "lifted": b.lifted_at is not None}
            for b in db.scalars(select(LessonBan).where(LessonBan.lesson_id == lesson.id))]
    repeated = sorted(((name, sum(c.values())) for name, c in by_student.items()
                       if sum(c.values()) >= REPEATED_ATTEMPTS), key=lambda x: -x[1])
    return {
        "blocked": sum(blocked_hosts.values()),
        "blocked_hosts": blocked_hosts.most_common(20),
        "by_student": {name: sum(c.values()) for name, c in by_student.items()},
        "requested": requested[:50],
        "allowed": list(lesson.allowed_sites),
        "banned": bans,
        "alerts": alerts[:50],
        "hands": hands,
        "repeated": [{"who": n, "attempts": c} for n, c in repeated],
        "ended_early": lesson.ended_at is not None,
        "extended_min": lesson.extended_min,
    }


def summarise(db: Session, lesson: Lesson, *, now: datetime) -> dict:
    if lesson.summarised_at is not None:
        return lesson.summary or {}
    summary = build(db, lesson)
    lesson.summary = summary
    lesson.summarised_at = now
    lesson.locked_seats = []
    lesson.eyes_until = None
    db.execute(delete(LessonActivity).where(LessonActivity.lesson_id == lesson.id))  # 001 §2.15
    if summary["repeated"]:
        _notify_repeated(db, lesson, summary)
    return summary


def _notify_repeated(db: Session, lesson: Lesson, summary: dict) -> None:
    from policy_server.notices.service import notify

    room = db.get(Room, lesson.room_id)
    cls = db.get(SchoolClass, lesson.class_id) if lesson.class_id else None
    people: set[int] = set(db.scalars(select(Person.id).where(Person.role == Role.admin,
                                                              Person.disabled.is_(False))))
    if cls is not None:
        people |= set(db.scalars(select(PersonClass.person_id).where(PersonClass.class_id == cls.id,
                                                                     PersonClass.class_teacher.is_(True))))
    names = ", ".join(f"{r['who']} ({r['attempts']})" for r in summary["repeated"])
    for person_id in sorted(people):
        notify(db, person_id=person_id, kind="lesson.repeated_attempts",
               subject_id=N_("Repeated attempts to open blocked sites (001 §2.7)"),
               body_id=N_("Lesson in %(room)s, class %(cls)s: %(names)s. See the lesson's summary."),
               params={"room": room.name if room else "", "cls": cls.name if cls else "—", "names": names,
                       # the counts alone: what the notice keeps past the retention days (001 §2.15)
                       "attempts": [r["attempts"] for r in summary["repeated"]]},
               link=f"/lessons/{lesson.id}")


# ------------------------------------------------------------------ retention (001 §2.15)

PERSONAL_REMOVED = "personal_removed"  # the summary's marker: names and seats taken out


def _old_named(db: Session, cutoff: datetime) -> list[Lesson]:
    """Lessons that ended before the cut-off whose summary still names students or seats."""
    rows = db.scalars(select(Lesson).where(Lesson.summarised_at.is_not(None), Lesson.ends_at < cutoff))
    return [les for les in rows if les.summary and not les.summary.get(PERSONAL_REMOVED)]


def depersonalised(summary: dict) -> dict:
    """The summary without a student in it: counts, the class's blocked sites, the sites
    requested and alerted on (no one's name or seat), the allowed sites stay."""
    out = dict(summary)
    out["by_student"] = {}
    out["repeated"] = []
    out["requested"] = [{"who": "", "seat": "", "host": r.get("host", "")}
                        for r in summary.get("requested", [])]
    out["alerts"] = [{"who": "", "seat": "", "host": a.get("host", ""), "lists": list(a.get("lists", []))}
                     for a in summary.get("alerts", [])]
    out["banned"] = [{"who": "", "seat": "", "os_user": "", "lifted": bool(b.get("lifted"))}
                     for b in summary.get("banned", [])]
    out[PERSONAL_REMOVED] = True
    return out


def retention_count(db: Session, *, cutoff: datetime) -> int:
    """How many lesson summaries past the cut-off still name students; changes nothing."""
    return len(_old_named(db, cutoff))


def apply_retention(db: Session, *, cutoff: datetime) -> int:
    """Take the students out of the summaries (and the bans: OS account, the teacher's reason)
    of the lessons that ended before the cut-off; the counts stay.  Called by
    `policy_server.db.retention` in its transaction."""
    lessons = _old_named(db, cutoff)
    for lesson in lessons:
        lesson.summary = depersonalised(lesson.summary)
        for ban in db.scalars(select(LessonBan).where(LessonBan.lesson_id == lesson.id)):
            ban.os_user, ban.seat, ban.reason = None, None, ""
    db.flush()
    return len(lessons)
