"""The live seat map of a lesson: each seat where it stands in the room, who is at it, the
site it has open now, its blocked attempts in this lesson, and banned / locked / offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server.db.models import Workstation
from policy_server.lessons.models import Lesson, LessonActivity, LessonBan
from policy_server.timetable import service as timetable

OFFLINE_AFTER = timedelta(seconds=120)
HAND_FOR = timedelta(minutes=5)


@dataclass
class SeatView:
    seat: str
    row: int
    col: int
    hostname: str = ""
    student: str = ""
    os_user: str = ""
    online: bool = False
    open_host: str = ""
    open_title: str = ""
    blocked: int = 0
    last_blocked: str = ""
    banned: bool = False
    locked: bool = False
    hand: bool = False
    requests: list[str] = field(default_factory=list)


@dataclass
class LessonLive:
    seats: list[SeatView]
    requests: list[dict]
    bans: list[LessonBan]
    last_activity_id: int
    blocked_total: int

    def fingerprint(self) -> tuple:
        return (self.last_activity_id, len(self.bans),
                tuple((s.seat, s.online, s.banned, s.locked, s.hand, s.open_host, s.blocked)
                      for s in self.seats))


def live_state(db: Session, lesson: Lesson, *, now: datetime) -> LessonLive:
    layout = timetable.room_layout(db, lesson.room_id)
    seating = timetable.seating_of(db, lesson.class_id, lesson.room_id)
    stations = {w.seat: w for w in db.scalars(select(Workstation)
                                              .where(Workstation.room_id == lesson.room_id))}
    seats = {p.seat: SeatView(p.seat, p.row, p.col, p.hostname, seating.get(p.seat, "")) for p in layout}
    for name, view in seats.items():
        ws = stations.get(name)
        view.online = bool(ws and ws.last_seen_at and now - ws.last_seen_at < OFFLINE_AFTER)
    bans = list(db.scalars(select(LessonBan).where(LessonBan.lesson_id == lesson.id,
                                                   LessonBan.lifted_at.is_(None))))
    banned_users = {b.os_user for b in bans if b.os_user}
    for b in bans:
        if b.seat in seats:
            seats[b.seat].banned = True
    running = lesson.ended_at is None and now < lesson.ends_at
    lock_on = running and (lesson.lock_at is None or lesson.lock_at <= now)
    eyes = running and lesson.eyes_until is not None and lesson.eyes_until > now
    for view in seats.values():
        view.locked = eyes or (lock_on and ("*" in lesson.locked_seats or view.seat in lesson.locked_seats))
    requests: list[dict] = []
    last_id = 0
    blocked_total = 0
    rows = db.execute(select(LessonActivity.id, LessonActivity.seat, LessonActivity.os_user,
                             LessonActivity.kind,
                             LessonActivity.host, LessonActivity.at, LessonActivity.detail)
                      .where(LessonActivity.lesson_id == lesson.id).order_by(LessonActivity.id))
    for a in rows:  # plain rows, not ORM objects: this runs for every live refresh
        last_id = a.id
        view = seats.get(a.seat or "")
        if a.kind == "blocked":
            blocked_total += 1
        if view is None:
            continue
        if a.os_user:
            view.os_user = a.os_user
            if a.os_user in banned_users:
                view.banned = True
        if a.kind == "open":
            view.open_host, view.open_title = a.host, str(a.detail.get("title", ""))
        elif a.kind == "blocked":
            view.blocked += 1
            view.last_blocked = a.host
        elif a.kind == "hand":
            view.hand = now - a.at < HAND_FOR
        elif a.kind == "request" and a.host and a.host not in lesson.allowed_sites:
            if a.host not in view.requests:
                view.requests.append(a.host)
            requests.append({"seat": view.seat, "who": view.student or a.os_user or view.seat,
                             "host": a.host, "at": a.at})
    return LessonLive(sorted(seats.values(), key=lambda s: (s.row, s.col)), requests[-20:], bans, last_id,
                      blocked_total)


def last_activity_id(db: Session, lesson_id: str) -> int:
    return db.scalar(select(func.max(LessonActivity.id)).where(LessonActivity.lesson_id == lesson_id)) or 0
