"""Where a student's unblock request lives: with the lesson's teacher, or in the queue.

During a lesson, unblock requests go to that lesson's teacher first (issue 12/13; 000 §7.3:
the teacher controls the students' internet use in the lesson).  This module is the one place
that decides it; the responsible person's queue (`policy_server.filtering.queue`) and the
lesson page both ask it:

* a queue item (`FilterRequest`, status "received") made only of unblock requests, every one
  sent from a workstation of a room while a lesson ran there, lives **with that lesson** while
  the lesson runs — shown on the lesson page, hidden from the responsible person's queue;
* it moves to **the queue** when the lesson ends (by itself, early, at the bell) undecided, or
  when the teacher forwards it (`forward`); a report (`web.report`, "this page should be
  blocked") or a request from outside the lesson is the responsible person's at once;
* the teacher decides it in the lesson: "Allow for this lesson" (`allow_in_lesson`: the site is
  opened for the rest of the lesson and the item is closed as allowed for the lesson, so the
  student's report page says "allowed" and it never reaches the queue), or forwards it.

Nothing is stored for the routing itself but the forwards: where an item lives follows from
its events, the workstations' rooms and the lessons' times, so it cannot drift.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Workstation, utcnow
from policy_server.filtering.models import FilterRequest, FilterRequestEvent
from policy_server.lessons.models import Lesson, LessonRequestForward
from policy_server.lessons.service import _acting, allow_site, normalise_site
from policy_server.scope import Viewer
from policy_server.timetable.errors import Missing, fail

TEACHER = "lesson"
QUEUE = "queue"


def _running(db: Session, now: datetime) -> list[Lesson]:
    return list(db.scalars(select(Lesson).where(Lesson.ended_at.is_(None), Lesson.starts_at <= now,
                                                Lesson.ends_at > now)))


def held_by_lessons(db: Session, rows: Iterable[FilterRequest], *, now: datetime | None = None
                    ) -> dict[int, str]:
    """{queue item id: lesson id} for the items among `rows` that live with a running lesson."""
    now = now or utcnow()
    candidates = {r.id: r for r in rows if r.status == "received" and set(r.kinds or ()) == {"unblock"}}
    if not candidates:
        return {}
    lessons = _running(db, now)
    if not lessons:
        return {}
    by_room = {lesson.room_id: lesson for lesson in lessons}
    forwarded = set(db.scalars(select(LessonRequestForward.request_id)
                               .where(LessonRequestForward.request_id.in_(tuple(candidates)))))
    events: dict[int, list[tuple[str | None, datetime]]] = defaultdict(list)
    for request_id, agent_id, at in db.execute(
            select(FilterRequestEvent.request_id, FilterRequestEvent.agent_id, FilterRequestEvent.occurred_at)
            .where(FilterRequestEvent.request_id.in_(tuple(candidates)))):
        events[request_id].append((agent_id, at))
    agents = {a for evs in events.values() for a, _ in evs if a}
    room_of = dict(db.execute(select(Workstation.id, Workstation.room_id)
                              .where(Workstation.id.in_(tuple(agents) or ("",)))).all())
    held: dict[int, str] = {}
    for request_id in candidates:
        if request_id in forwarded or not events.get(request_id):
            continue
        rooms = {room_of.get(agent_id) for agent_id, _ in events[request_id]}
        if len(rooms) != 1:
            continue  # asked from no room or from several: the responsible person's
        lesson = by_room.get(next(iter(rooms)))
        times = [at for _, at in events[request_id]]
        if lesson is not None and all(lesson.starts_at <= at < lesson.ends_at for at in times):
            held[request_id] = lesson.id
    return held


def where(db: Session, row: FilterRequest, *, now: datetime | None = None) -> tuple[str, str | None]:
    """(TEACHER, lesson id) or (QUEUE, None) for one queue item."""
    lesson_id = held_by_lessons(db, [row], now=now).get(row.id)
    return (TEACHER, lesson_id) if lesson_id else (QUEUE, None)


def in_queue(db: Session, rows: list[FilterRequest], *, now: datetime | None = None) -> list[FilterRequest]:
    """The rows the responsible person's queue shows: all but those a running lesson holds."""
    held = held_by_lessons(db, rows, now=now)
    return [r for r in rows if r.id not in held]


def of_lesson(db: Session, lesson: Lesson, *, now: datetime | None = None) -> list[FilterRequest]:
    """The queue items this (running) lesson holds, newest first."""
    from policy_server.filtering.queue import sync_events

    sync_events(db)
    rows = list(db.scalars(select(FilterRequest).where(FilterRequest.status == "received",
                                                       FilterRequest.last_at >= lesson.starts_at)
                           .order_by(FilterRequest.last_at.desc()).limit(200)))
    held = held_by_lessons(db, rows, now=now)
    return [r for r in rows if held.get(r.id) == lesson.id]


def _held_item(db: Session, lesson: Lesson, request_id: int, now: datetime) -> FilterRequest:
    for row in of_lesson(db, lesson, now=now):
        if row.id == request_id:
            return row
    raise fail(Missing, "lesson.request_not_found")


def forward(db: Session, viewer: Viewer, *, lesson_id: str, request_id: int,
            now: datetime | None = None) -> FilterRequest:
    """The teacher passes one request on to the responsible person's queue now."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    row = _held_item(db, lesson, request_id, now)
    db.add(LessonRequestForward(request_id=row.id, lesson_id=lesson.id, forwarded_by=viewer.name,
                                forwarded_at=now))
    audit(db, actor=viewer.name, action="lesson.forward_request", target=f"lesson:{lesson.id}",
          detail={"request": row.id, "url": row.url})
    db.flush()
    return row


def allow_in_lesson(db: Session, viewer: Viewer, *, lesson_id: str, request_id: int,
                    now: datetime | None = None) -> FilterRequest:
    """The teacher allows a held request for the rest of the lesson: the site opens on the room's
    seats (`lessons.service.allow_site`) and the item is closed as "allowed for the lesson"."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    row = _held_item(db, lesson, request_id, now)
    allow_site(db, viewer, lesson_id=lesson.id, site=row.host or row.url, now=now)  # closes the item
    db.flush()
    return row


def close_for_site(db: Session, lesson: Lesson, site: str, *, by: str, now: datetime) -> int:
    """A site allowed in the lesson (typed, or from the seat map) answers the held requests for it."""
    entry = normalise_site(site)
    closed = 0
    for row in of_lesson(db, lesson, now=now):
        if row.host == entry or row.host.endswith("." + entry):
            row.status = "allowed"
            row.decision = {"action": "allow", "scope": "lesson", "lesson": lesson.id, "entry": entry,
                            "seats": list(row.seats), "lesson_ends_at": lesson.ends_at.isoformat()}
            row.decided_by, row.decided_at = by, now
            closed += 1
    return closed
