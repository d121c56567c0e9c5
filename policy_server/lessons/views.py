"""Lessons JSON API (session cookie + `X-CSRF-Token` on writes), the agent's lesson channel,
and the timetable's and notices' JSON routes.  Scope: `policy_server/scope.py`; the room
scope is applied in the services (a lesson outside the viewer's rooms is a 404)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Body, Depends, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.agents.auth import current_agent
from policy_server.db.models import Person, Role, Room, Workstation, utcnow
from policy_server.db.session import get_db
from policy_server.errors import Conflict
from policy_server.lessons import activity, seats
from policy_server.lessons import requests as lesson_requests
from policy_server.lessons import service as lessons
from policy_server.lessons.models import Lesson
from policy_server.notices import service as notices
from policy_server.people.auth import require_csrf
from policy_server.timetable import service as timetable
from policy_server.timetable.errors import Missing, Refused, fail

router = APIRouter(prefix="/api/v1", tags=["lessons"])

readers = scope.allow(Role.admin, Role.teacher)
everyone = scope.allow(Role.admin, Role.teacher, Role.director, Role.district)
admins = scope.allow(Role.admin)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def lesson_json(db: Session, lesson: Lesson, *, with_seats: bool = False) -> dict:
    room = db.get(Room, lesson.room_id)
    teacher = db.get(Person, lesson.teacher_id)
    now = utcnow()
    body = {
        "id": lesson.id, "room": room.name if room else None, "room_id": lesson.room_id,
        "teacher": teacher.username if teacher else None, "period_id": lesson.period_id,
        "class_id": lesson.class_id, "mode": lesson.mode, "scene": lesson.scene,
        "allow_list": list(lesson.allow_list), "allowed_sites": list(lesson.allowed_sites),
        "starts_at": _iso(lesson.starts_at), "ends_at": _iso(lesson.ends_at),
        "planned_end": _iso(lesson.planned_end), "ended_at": _iso(lesson.ended_at),
        "extended_min": lesson.extended_min, "running": lessons.is_running(lesson, now),
        "locked_seats": list(lesson.locked_seats), "lock_message": lesson.lock_message,
        "lock_at": _iso(lesson.lock_at), "eyes_until": _iso(lesson.eyes_until),
        "summary": lesson.summary,
    }
    if with_seats and body["running"]:
        state = seats.live_state(db, lesson, now=now)
        body["seats"] = [s.__dict__ for s in state.seats]
        body["bans"] = [{"id": b.id, "seat": b.seat, "os_user": b.os_user} for b in state.bans]
        body["requests"] = [{**r, "at": _iso(r["at"])} for r in state.requests]
    return body


# ----------------------------------------------------------------------------- lessons


@router.get("/lessons")
def list_lessons(limit: int = 50, viewer: scope.Viewer = Depends(readers),
                 db: Session = Depends(get_db)) -> dict:
    return {"lessons": [lesson_json(db, le) for le in lessons.list_lessons(db, viewer, limit=limit)]}


class StartBody(BaseModel):
    room: str | None = None  # room name (ad hoc); without it: the teacher's period running now
    period_id: int | None = None
    ends_at: AwareDatetime | None = None
    mode: str | None = None
    scene_id: int | None = None
    class_id: int | None = None
    allow_list: list[str] = Field(default_factory=list, max_length=200)  # ad hoc, without a scene


@router.post("/lessons", dependencies=[Depends(require_csrf)])
def start(body: StartBody, viewer: scope.Viewer = Depends(readers), db: Session = Depends(get_db)) -> dict:
    room_id = None
    if body.room is not None:
        room = db.scalar(select(Room).where(Room.name == body.room))
        if room is None or not viewer.may_see_room(room.id):
            raise fail(Missing, "lesson.room_not_yours", room=body.room)
        room_id = room.id
    lesson = lessons.start_lesson(db, viewer, room_id=room_id, period_id=body.period_id, ends_at=body.ends_at,
                                  mode=body.mode, scene_id=body.scene_id, class_id=body.class_id,
                                  sites=body.allow_list)
    db.commit()
    return {"lesson_id": lesson.id, **lesson_json(db, lesson)}


@router.get("/lessons/{lesson_id}")
def get_lesson(lesson_id: str, viewer: scope.Viewer = Depends(readers),
               db: Session = Depends(get_db)) -> dict:
    return lesson_json(db, lessons.get_lesson(db, viewer, lesson_id), with_seats=True)


@router.delete("/lessons/{lesson_id}", dependencies=[Depends(require_csrf)])
@router.post("/lessons/{lesson_id}/end", dependencies=[Depends(require_csrf)])
def end(lesson_id: str, viewer: scope.Viewer = Depends(readers), db: Session = Depends(get_db)) -> dict:
    lesson = lessons.end_lesson(db, viewer, lesson_id=lesson_id)
    db.commit()
    return lesson_json(db, lesson)


class ExtendBody(BaseModel):
    minutes: int = Field(ge=1, le=lessons.MAX_EXTENSION_MIN)


@router.post("/lessons/{lesson_id}/extend", dependencies=[Depends(require_csrf)])
def extend(lesson_id: str, body: ExtendBody, viewer: scope.Viewer = Depends(readers),
           db: Session = Depends(get_db)) -> dict:
    lesson = lessons.extend_lesson(db, viewer, lesson_id=lesson_id, minutes=body.minutes)
    db.commit()
    return lesson_json(db, lesson)


class BanBody(BaseModel):
    seat: str | None = None
    os_user: str | None = None
    reason: str = Field(default="", max_length=300)


@router.post("/lessons/{lesson_id}/bans", dependencies=[Depends(require_csrf)])
def ban(lesson_id: str, body: BanBody, viewer: scope.Viewer = Depends(readers),
        db: Session = Depends(get_db)) -> dict:
    entry = lessons.ban(db, viewer, lesson_id=lesson_id, **body.model_dump())
    db.commit()
    return {"ban_id": entry.id}


@router.delete("/lessons/{lesson_id}/bans/{ban_id}", dependencies=[Depends(require_csrf)])
def unban(lesson_id: str, ban_id: str, viewer: scope.Viewer = Depends(readers),
          db: Session = Depends(get_db)) -> dict:
    lifted = lessons.unban(db, viewer, lesson_id=lesson_id, ban_id=ban_id)
    db.commit()
    return {"lifted": lifted}


class SiteBody(BaseModel):
    site: str = Field(max_length=400)


@router.post("/lessons/{lesson_id}/allow", dependencies=[Depends(require_csrf)])
def allow(lesson_id: str, body: SiteBody, viewer: scope.Viewer = Depends(readers),
          db: Session = Depends(get_db)) -> dict:
    site = lessons.allow_site(db, viewer, lesson_id=lesson_id, site=body.site)
    db.commit()
    return {"allowed": site}


@router.get("/lessons/{lesson_id}/requests")
def held_requests(lesson_id: str, viewer: scope.Viewer = Depends(readers),
                  db: Session = Depends(get_db)) -> dict:
    """The unblock requests this running lesson holds (its teacher's to answer first)."""
    lesson = lessons.get_lesson(db, viewer, lesson_id)
    rows = lesson_requests.of_lesson(db, lesson) if lessons.is_running(lesson, utcnow()) else []
    return {"items": [{"id": r.id, "url": r.url, "host": r.host, "seats": r.seats, "comments": r.comments,
                       "count": r.count, "last_at": r.last_at.isoformat()} for r in rows]}


@router.post("/lessons/{lesson_id}/requests/{request_id}/forward", dependencies=[Depends(require_csrf)])
def forward_request(lesson_id: str, request_id: int, viewer: scope.Viewer = Depends(readers),
                    db: Session = Depends(get_db)) -> dict:
    row = lesson_requests.forward(db, viewer, lesson_id=lesson_id, request_id=request_id)
    db.commit()
    return {"forwarded": row.id}


@router.post("/lessons/{lesson_id}/requests/{request_id}/allow", dependencies=[Depends(require_csrf)])
def allow_request(lesson_id: str, request_id: int, viewer: scope.Viewer = Depends(readers),
                  db: Session = Depends(get_db)) -> dict:
    row = lesson_requests.allow_in_lesson(db, viewer, lesson_id=lesson_id, request_id=request_id)
    db.commit()
    return {"allowed": row.decision.get("entry"), "id": row.id}


class LockBody(BaseModel):
    seat: str | None = None
    message: str = Field(default="", max_length=200)
    countdown_s: int = Field(default=0, ge=0, le=lessons.MAX_LOCK_COUNTDOWN_S)


@router.post("/lessons/{lesson_id}/lock", dependencies=[Depends(require_csrf)])
def lock(lesson_id: str, body: LockBody, viewer: scope.Viewer = Depends(readers),
         db: Session = Depends(get_db)) -> dict:
    lesson = lessons.lock(db, viewer, lesson_id=lesson_id, **body.model_dump())
    db.commit()
    return lesson_json(db, lesson)


class UnlockBody(BaseModel):
    seat: str | None = None


@router.post("/lessons/{lesson_id}/unlock", dependencies=[Depends(require_csrf)])
def unlock(lesson_id: str, body: UnlockBody = Body(default_factory=UnlockBody),
           viewer: scope.Viewer = Depends(readers), db: Session = Depends(get_db)) -> dict:
    lesson = lessons.unlock(db, viewer, lesson_id=lesson_id, seat=body.seat)
    db.commit()
    return lesson_json(db, lesson)


class EyesBody(BaseModel):
    seconds: int = Field(default=120, ge=10, le=lessons.MAX_EYES_S)
    message: str = Field(default="", max_length=200)


@router.post("/lessons/{lesson_id}/eyes", dependencies=[Depends(require_csrf)])
def eyes(lesson_id: str, body: EyesBody, viewer: scope.Viewer = Depends(readers),
         db: Session = Depends(get_db)) -> dict:
    lesson = lessons.eyes_on_me(db, viewer, lesson_id=lesson_id, seconds=body.seconds, message=body.message)
    db.commit()
    return lesson_json(db, lesson)


class SchoolBanBody(BaseModel):
    until: AwareDatetime | None = None
    seat: str | None = None
    os_user: str | None = None
    reason: str = Field(default="", max_length=300)


@router.post("/bans", dependencies=[Depends(require_csrf)])
def ban_anywhere(body: SchoolBanBody, viewer: scope.Viewer = Depends(readers),
                 db: Session = Depends(get_db)) -> dict:
    """The responsible person: a ban until `until`, every room.  A teacher: a ban in their
    running lesson (the seat's room among their lessons), until that lesson ends."""
    if viewer.role == Role.admin and body.until is not None:
        from policy_server.policies import admin as policy_admin

        bundle, ban_id = policy_admin.ban(db, actor=viewer.person, until=body.until, seat=body.seat,
                                          os_user=body.os_user, reason=body.reason)
        db.commit()
        return {"ban_id": ban_id, "policy_version": bundle.version}
    mine = lessons.running_for_teacher(db, viewer.person, utcnow())
    if not mine:
        raise fail(Refused, "lesson.ban_no_lesson")
    target = mine[0]
    if body.seat:
        with_seat = [le for le in mine
                     if body.seat in {p.seat for p in timetable.room_layout(db, le.room_id)}]
        if not with_seat:
            room = db.get(Room, target.room_id)
            raise fail(Refused, "lesson.seat_unknown", seat=body.seat, room=room.name if room else "")
        target = with_seat[0]
    entry = lessons.ban(db, viewer, lesson_id=target.id, seat=body.seat, os_user=body.os_user,
                        reason=body.reason)
    db.commit()
    return {"ban_id": entry.id, "lesson_id": target.id, "until": _iso(target.ends_at)}


@router.delete("/bans/{ban_id}", dependencies=[Depends(require_csrf)])
def lift_anywhere(ban_id: str, viewer: scope.Viewer = Depends(readers),
                  db: Session = Depends(get_db)) -> dict:
    from policy_server.lessons.models import LessonBan

    entry = db.get(LessonBan, ban_id)
    if entry is not None:
        lifted = lessons.unban(db, viewer, lesson_id=entry.lesson_id, ban_id=ban_id)
        db.commit()
        return {"lifted": lifted}
    if viewer.role != Role.admin:
        raise fail(Missing, "lesson.not_found")
    from policy_server.policies import admin as policy_admin

    bundle = policy_admin.lift_ban(db, actor=viewer.person, ban_id=ban_id)
    db.commit()
    return {"lifted": 1, "policy_version": bundle.version}


# ----------------------------------------------------------------------------- the agent's lesson channel


class ActivityItem(BaseModel):
    kind: str = Field(pattern=r"^(open|hand|request)$")
    host: str = Field(default="", max_length=253)
    url: str = Field(default="", max_length=2000)
    title: str = Field(default="", max_length=300)
    os_user: str | None = Field(default=None, max_length=64)
    at: AwareDatetime | None = None


class ActivityBody(BaseModel):
    items: list[ActivityItem] = Field(max_length=100)


@router.post("/lessons/activity", dependencies=[Depends(scope.agent_only)])
def agent_activity(body: ActivityBody, agent: Workstation = Depends(current_agent),
                   db: Session = Depends(get_db)) -> dict:
    """Lesson-time activity from a seat; refused (409) when no lesson runs in its room, so the
    agent stops sending (nothing is kept outside a lesson: 001 §2.15)."""
    lesson = activity.record_from_agent(db, agent, [i.model_dump() for i in body.items])
    if lesson is None:
        raise Conflict("no lesson runs in this workstation's room; send lesson activity only during "
                       "a lesson of this room (the policy bundle's lessons)", code="lesson.none")
    db.commit()
    return {"lesson_id": lesson.id, "stored": len(body.items)}


# ----------------------------------------------------------------------------- timetable


@router.get("/timetable/periods")
def periods(viewer: scope.Viewer = Depends(readers), db: Session = Depends(get_db)) -> dict:
    return {"periods": [p.__dict__ for p in timetable.list_periods(db, viewer)]}


class PeriodBody(BaseModel):
    weekday: str | int
    starts: str
    ends: str
    room: str
    school_class: str = ""
    teacher: str


@router.post("/timetable/periods", dependencies=[Depends(require_csrf)])
def add_period(body: PeriodBody, viewer: scope.Viewer = Depends(admins),
               db: Session = Depends(get_db)) -> dict:
    period = timetable.add_period(db, viewer, **body.model_dump())
    db.commit()
    return {"id": period.id}


@router.delete("/timetable/periods/{period_id}", dependencies=[Depends(require_csrf)])
def delete_period(period_id: int, viewer: scope.Viewer = Depends(admins),
                  db: Session = Depends(get_db)) -> dict:
    timetable.delete_period(db, viewer, period_id=period_id)
    db.commit()
    return {"deleted": period_id}


@router.post("/timetable/import", dependencies=[Depends(require_csrf)])
def import_periods(csv_text: str = Body(..., media_type="text/csv"), viewer: scope.Viewer = Depends(admins),
                   db: Session = Depends(get_db)) -> Response:
    from policy_server.timetable.errors import TEXTS

    count, problems = timetable.import_csv(db, viewer, text=csv_text)
    if problems:
        db.rollback()
        import json

        return Response(json.dumps({"imported": 0, "problems": [
            {"line": p.line, "code": p.message_code, "detail": TEXTS[p.message_code] % p.params}
            for p in problems]}, ensure_ascii=False), status_code=422, media_type="application/json")
    db.commit()
    return Response(f'{{"imported": {count}}}', media_type="application/json")


# ----------------------------------------------------------------------------- notices


@router.get("/notices")
def my_notices(viewer: scope.Viewer = Depends(everyone), db: Session = Depends(get_db)) -> dict:
    return {"unread": notices.unread_count(db, viewer),
            "notices": [{"id": n.id, "kind": n.kind, "subject": n.subject, "body": n.body, "link": n.link,
                         "created_at": _iso(n.created_at), "read_at": _iso(n.read_at),
                         # set once retention took the student out of the text (001 §2.15)
                         "personal_removed_at": _iso(n.personal_removed_at)}
                        for n in notices.list_notices(db, viewer)]}


@router.post("/notices/read", dependencies=[Depends(require_csrf)])
def read_notices(notice_id: int | None = None, viewer: scope.Viewer = Depends(everyone),
                 db: Session = Depends(get_db)) -> dict:
    count = notices.mark_read(db, viewer, notice_id=notice_id)
    db.commit()
    return {"marked": count}
