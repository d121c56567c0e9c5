"""Lessons: start (one click from the timetable, or ad hoc), the hard end, extensions, and
the teacher's actions on seats (ban, allow a site, lock, "eyes on me").

The `lessons` table is the truth.  Every change re-writes the policy bundle's `lessons` and
the lesson bans from it (`sync_bundle`) and pushes it; each agent receives only its own
room's lessons and bans (`bundle.for_room`).  A lesson's end is in the bundle, so an agent
that lost the server still ends it on time; bans end with the lesson (`until = ends_at`).

Scope (policy_server/scope.py): a teacher sees the lessons of their own rooms and acts on
their own lessons; the responsible person sees and acts on all.  Anything outside the
viewer's rooms is "not found" (404)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import Person, Role, Room, SchoolClass, Workstation, utcnow
from policy_server.lessons.models import Lesson, LessonActivity, LessonBan, Preset, Scene
from policy_server.policies.service import amend_policy
from policy_server.scope import Viewer
from policy_server.timetable import service as timetable
from policy_server.timetable.errors import Clash, Invalid, Missing, Refused, fail

MODES = ("open", "allow_list", "no_internet")
MAX_ADHOC = timedelta(hours=4)
MAX_EXTENSION_MIN = 30  # in all, per lesson
MAX_LOCK_COUNTDOWN_S = 300
MAX_EYES_S = 600
_SITE = re.compile(r"^(\*\.)?([a-z0-9-]{1,63}\.)+[a-z]{2,63}(/[^\s]*)?$")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def is_running(lesson: Lesson, now: datetime) -> bool:
    return lesson.ended_at is None and lesson.starts_at <= now < lesson.ends_at


# ----------------------------------------------------------------------------- reading, scope


def _rooms_query(viewer: Viewer, query):
    if viewer.room_ids is not None:
        query = query.where(Lesson.room_id.in_(viewer.room_ids or {-1}))
    return query


def get_lesson(db: Session, viewer: Viewer, lesson_id: str) -> Lesson:
    lesson = db.get(Lesson, lesson_id)
    if lesson is None or not viewer.may_see_room(lesson.room_id):
        raise fail(Missing, "lesson.not_found")
    return lesson


def _own(viewer: Viewer, lesson: Lesson) -> None:
    if viewer.role != Role.admin and lesson.teacher_id != viewer.person.id:
        raise fail(Refused, "lesson.not_yours")


def _acting(db: Session, viewer: Viewer, lesson_id: str, now: datetime) -> Lesson:
    lesson = get_lesson(db, viewer, lesson_id)
    _own(viewer, lesson)
    if not is_running(lesson, now):
        raise fail(Clash, "lesson.ended")
    return lesson


def running_in_room(db: Session, room_id: int, now: datetime) -> Lesson | None:
    return db.scalar(select(Lesson).where(Lesson.room_id == room_id, Lesson.ended_at.is_(None),
                                          Lesson.starts_at <= now, Lesson.ends_at > now)
                     .order_by(Lesson.starts_at.desc()).limit(1))


def running_for_teacher(db: Session, person: Person, now: datetime) -> list[Lesson]:
    return list(db.scalars(select(Lesson).where(Lesson.teacher_id == person.id, Lesson.ended_at.is_(None),
                                                Lesson.starts_at <= now, Lesson.ends_at > now)))


def list_lessons(db: Session, viewer: Viewer, *, limit: int = 50) -> list[Lesson]:
    query = select(Lesson).order_by(Lesson.starts_at.desc()).limit(max(1, min(limit, 500)))
    return list(db.scalars(_rooms_query(viewer, query)))


def room_of(db: Session, viewer: Viewer, room_id: int) -> Room:
    room = db.get(Room, room_id)
    if room is None or not viewer.may_see_room(room_id):
        raise fail(Missing, "lesson.room_not_yours", room=str(room_id))
    return room


def viewer_rooms(db: Session, viewer: Viewer) -> list[Room]:
    query = select(Room).order_by(Room.name)
    if viewer.room_ids is not None:
        query = query.where(Room.id.in_(viewer.room_ids or {-1}))
    return list(db.scalars(query))


# ----------------------------------------------------------------------------- presets and scenes


def normalise_site(site: str) -> str:
    value = site.strip().lower()
    for prefix in ("https://", "http://"):
        if value.startswith(prefix):
            value = value[len(prefix):]
    value = value.rstrip("/")
    if value.startswith("www."):
        value = value[4:]
    if not _SITE.match(value) or len(value) > 300:
        raise fail(Invalid, "lesson.bad_site", site=site.strip()[:80])
    return value


def scenes_of(db: Session, person: Person) -> list[Scene]:
    return list(db.scalars(select(Scene).where(Scene.person_id == person.id).order_by(Scene.name)))


def save_scene(db: Session, viewer: Viewer, *, name: str, sites: str | list[str],
               scene_id: int | None = None) -> Scene:
    name = name.strip()
    if not 1 <= len(name) <= 64:
        raise fail(Invalid, "lesson.scene_name")
    items = sites if isinstance(sites, list) else re.split(r"[\s,;]+", sites)
    domains = sorted({normalise_site(s) for s in items if s.strip()})
    if scene_id is not None:
        scene = db.get(Scene, scene_id)
        if scene is None or scene.person_id != viewer.person.id:
            raise fail(Missing, "lesson.scene_not_found")
        scene.name, scene.domains = name, domains
    else:
        scene = Scene(person_id=viewer.person.id, name=name, domains=domains)
        db.add(scene)
    db.flush()
    audit(db, actor=viewer.name, action="lesson.scene.save", target=f"scene:{scene.id}",
          detail={"name": name, "sites": len(domains)})
    return scene


def delete_scene(db: Session, viewer: Viewer, *, scene_id: int) -> None:
    scene = db.get(Scene, scene_id)
    if scene is None or scene.person_id != viewer.person.id:
        raise fail(Missing, "lesson.scene_not_found")
    preset = db.get(Preset, viewer.person.id)
    if preset is not None and preset.scene_id == scene_id:
        preset.scene_id = None
    db.delete(scene)
    audit(db, actor=viewer.name, action="lesson.scene.delete", target=f"scene:{scene_id}")


def preset_of(db: Session, person: Person) -> Preset:
    return db.get(Preset, person.id) or Preset(person_id=person.id, mode="open", scene_id=None)


def save_preset(db: Session, viewer: Viewer, *, mode: str, scene_id: int | None) -> Preset:
    if mode not in MODES:
        raise fail(Invalid, "lesson.bad_mode")
    if scene_id is not None:
        scene = db.get(Scene, scene_id)
        if scene is None or scene.person_id != viewer.person.id:
            raise fail(Missing, "lesson.scene_not_found")
    preset = db.get(Preset, viewer.person.id)
    if preset is None:
        preset = Preset(person_id=viewer.person.id)
        db.add(preset)
    preset.mode, preset.scene_id = mode, scene_id
    audit(db, actor=viewer.name, action="lesson.preset", detail={"mode": mode, "scene": scene_id})
    return preset


# ----------------------------------------------------------------------------- start, extend, end


def start_lesson(db: Session, viewer: Viewer, *, now: datetime | None = None, room_id: int | None = None,
                 period_id: int | None = None, ends_at: datetime | None = None, mode: str | None = None,
                 scene_id: int | None = None, class_id: int | None = None,
                 sites: list[str] | None = None) -> Lesson:
    """Start a lesson: from the teacher's period running now (one click; ends at the period's
    end), or ad hoc in one of their rooms until `ends_at` (at most 4 hours away).  Mode and
    scene default to the teacher's preset."""
    now = now or utcnow()
    person = viewer.person
    period = None
    if period_id is not None:
        current, _next = timetable.now_and_next(db, person, now)
        row = next((r for r in timetable.teacher_periods_on(db, person, timetable.local_now(now).date())
                    if r.id == period_id), None)
        if row is None and viewer.role == Role.admin:
            row = next((r for r in timetable.list_periods(db, viewer) if r.id == period_id), None)
        if row is None:
            raise fail(Missing, "lesson.not_found")
        starts, ends = timetable.period_bounds(row, now)
        if not (starts - timedelta(minutes=10) <= now < ends):
            raise fail(Invalid, "lesson.no_period")
        period, room_id, class_id, ends_at = row, row.room_id, row.class_id, ends
    elif room_id is None:
        current, _next = timetable.now_and_next(db, person, now)
        if current is None:
            raise fail(Invalid, "lesson.no_period")
        return start_lesson(db, viewer, now=now, period_id=current.id, mode=mode, scene_id=scene_id,
                            sites=sites)
    room = room_of(db, viewer, room_id)
    if ends_at is None or not (now < ends_at <= now + MAX_ADHOC):
        raise fail(Invalid, "lesson.bad_end", hours=int(MAX_ADHOC.total_seconds() // 3600))
    if class_id is not None and db.get(SchoolClass, class_id) is None:
        class_id = None
    running = running_in_room(db, room.id, now)
    if running is not None:
        if running.teacher_id == person.id and period is not None and running.period_id == period.id:
            return running  # a second click on the same period: the same lesson
        raise fail(Clash, "lesson.room_busy", room=room.name,
                   until=timetable.local_now(running.ends_at).strftime("%H:%M"))
    preset = preset_of(db, person)
    mode = mode or preset.mode
    if mode not in MODES:
        raise fail(Invalid, "lesson.bad_mode")
    scene_id = scene_id if scene_id is not None else preset.scene_id
    scene = db.get(Scene, scene_id) if scene_id is not None else None
    if scene is not None and scene.person_id != person.id:
        raise fail(Missing, "lesson.scene_not_found")
    lesson = Lesson(id=new_id(), room_id=room.id, teacher_id=person.id,
                    period_id=period.id if period else None, class_id=class_id, mode=mode,
                    scene=scene.name if scene else "",
                    allow_list=sorted({*(scene.domains if scene else []),
                                       *(normalise_site(x) for x in sites or [])}),
                    allowed_sites=[], extended_min=0, starts_at=now, ends_at=ends_at, planned_end=ends_at,
                    locked_seats=[], lock_message="")
    db.add(lesson)
    db.flush()
    audit(db, actor=person.username, action="lesson.start", target=f"lesson:{lesson.id}",
          detail={"room": room.name, "mode": mode, "scene": lesson.scene, "ends_at": ends_at.isoformat(),
                  "period": lesson.period_id})
    sync_bundle(db, actor=person.username,
                comment=f"lesson {lesson.id} in {room.name} until {ends_at:%H:%M} UTC")
    return lesson


def extend_lesson(db: Session, viewer: Viewer, *, lesson_id: str, minutes: int,
                  now: datetime | None = None) -> Lesson:
    """Extend by `minutes` (a click each time), at most 30 minutes in all and never into the
    room's next period."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    if not 1 <= minutes <= MAX_EXTENSION_MIN:
        raise fail(Invalid, "lesson.bad_minutes", low=1, high=MAX_EXTENSION_MIN)
    until = lesson.ends_at + timedelta(minutes=minutes)
    if lesson.extended_min + minutes > MAX_EXTENSION_MIN or _next_period_start(db, lesson) < until:
        cap = min(lesson.planned_end + timedelta(minutes=MAX_EXTENSION_MIN), _next_period_start(db, lesson))
        raise fail(Invalid, "lesson.extend_cap", minutes=MAX_EXTENSION_MIN,
                   until=timetable.local_now(max(cap, lesson.ends_at)).strftime("%H:%M"))
    lesson.ends_at = until
    lesson.extended_min += minutes
    audit(db, actor=viewer.name, action="lesson.extend", target=f"lesson:{lesson.id}",
          detail={"minutes": minutes, "ends_at": until.isoformat()})
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id} extended by {minutes} min")
    return lesson


def _next_period_start(db: Session, lesson: Lesson) -> datetime:
    local = timetable.local_now(lesson.ends_at)
    hhmm = local.strftime("%H:%M")
    from policy_server.timetable.models import Period

    starts = db.scalar(select(Period.starts).where(Period.room_id == lesson.room_id,
                                                   Period.weekday == local.weekday(), Period.starts >= hhmm,
                                                   Period.id != (lesson.period_id or -1))
                       .order_by(Period.starts).limit(1))
    if starts is None:
        return lesson.ends_at + timedelta(days=1)
    return timetable.at_local(local.date(), starts)


def end_lesson(db: Session, viewer: Viewer, *, lesson_id: str, now: datetime | None = None) -> Lesson:
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    lesson.ended_at = now
    lesson.ends_at = now
    audit(db, actor=viewer.name, action="lesson.end", target=f"lesson:{lesson.id}")
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id} ended")
    from policy_server.lessons.summary import summarise

    summarise(db, lesson, now=now)
    return lesson


# ----------------------------------------------------------------------------- actions


def _seat_in_room(db: Session, lesson: Lesson, seat: str) -> str:
    seat = seat.strip()
    known = {p.seat for p in timetable.room_layout(db, lesson.room_id)}
    if seat not in known:
        room = db.get(Room, lesson.room_id)
        raise fail(Invalid, "lesson.seat_unknown", seat=seat[:64], room=room.name if room else "")
    return seat


def ban(db: Session, viewer: Viewer, *, lesson_id: str, seat: str | None = None, os_user: str | None = None,
        reason: str = "", now: datetime | None = None) -> LessonBan:
    """No internet for the seat or the student (OS account) until the lesson ends (000 §7.3).
    An OS-account ban reaches only the agents of the lesson's room."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    seat = _seat_in_room(db, lesson, seat) if seat and seat.strip() else None
    os_user = (os_user or "").strip()[:64] or None
    if not seat and not os_user:
        raise fail(Invalid, "lesson.ban_target")
    entry = LessonBan(id=new_id(), lesson_id=lesson.id, seat=seat, os_user=os_user, reason=reason[:300])
    db.add(entry)
    db.flush()
    audit(db, actor=viewer.name, action="lesson.ban", target=f"lesson:{lesson.id}",
          detail={"seat": seat, "os_user": os_user, "ban": entry.id})
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: ban {seat or os_user}")
    return entry


def unban(db: Session, viewer: Viewer, *, lesson_id: str, ban_id: str | None = None, seat: str | None = None,
          now: datetime | None = None) -> int:
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    query = select(LessonBan).where(LessonBan.lesson_id == lesson.id, LessonBan.lifted_at.is_(None))
    if ban_id:
        query = query.where(LessonBan.id == ban_id)
    elif seat:
        query = query.where(LessonBan.seat == seat)
    lifted = 0
    for entry in db.scalars(query):
        entry.lifted_at = now
        lifted += 1
    audit(db, actor=viewer.name, action="lesson.unban", target=f"lesson:{lesson.id}",
          detail={"seat": seat, "ban": ban_id, "lifted": lifted})
    if lifted:
        sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: unban {seat or ban_id}")
    return lifted


def allow_site(db: Session, viewer: Viewer, *, lesson_id: str, site: str, now: datetime | None = None) -> str:
    """Open one site for the rest of this lesson (typed, or from a student's request)."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    entry = normalise_site(site)
    if entry not in lesson.allowed_sites:
        lesson.allowed_sites = [*lesson.allowed_sites, entry]
    db.add(LessonActivity(lesson_id=lesson.id, at=now, kind="allowed", host=entry,
                          detail={"by": viewer.name}))
    audit(db, actor=viewer.name, action="lesson.allow_site", target=f"lesson:{lesson.id}",
          detail={"site": entry})
    from policy_server.lessons.requests import close_for_site  # (it imports this module)

    close_for_site(db, lesson, entry, by=viewer.name, now=now)  # the students' requests for it: answered
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: allow {entry}")
    return entry


def disallow_site(db: Session, viewer: Viewer, *, lesson_id: str, site: str,
                  now: datetime | None = None) -> None:
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    lesson.allowed_sites = [s for s in lesson.allowed_sites if s != site]
    audit(db, actor=viewer.name, action="lesson.disallow_site", target=f"lesson:{lesson.id}",
          detail={"site": site})
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: disallow {site}")


def lock(db: Session, viewer: Viewer, *, lesson_id: str, seat: str | None = None, message: str = "",
         countdown_s: int = 0, now: datetime | None = None) -> Lesson:
    """Lock every screen (`seat` None) or one, with a message, after an optional countdown."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    if len(message) > 200:
        raise fail(Invalid, "lesson.message_long")
    if not 0 <= countdown_s <= MAX_LOCK_COUNTDOWN_S:
        raise fail(Invalid, "lesson.bad_minutes", low=0, high=MAX_LOCK_COUNTDOWN_S // 60)
    target = _seat_in_room(db, lesson, seat) if seat else "*"
    seats = set(lesson.locked_seats)
    seats.add(target)
    lesson.locked_seats = sorted(seats)
    lesson.lock_message = message.strip()
    lesson.lock_at = now + timedelta(seconds=countdown_s)
    audit(db, actor=viewer.name, action="lesson.lock", target=f"lesson:{lesson.id}",
          detail={"seat": target, "countdown_s": countdown_s})
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: lock {target}")
    return lesson


def unlock(db: Session, viewer: Viewer, *, lesson_id: str, seat: str | None = None,
           now: datetime | None = None) -> Lesson:
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    lesson.locked_seats = [] if not seat else [s for s in lesson.locked_seats if s not in (seat, "*")]
    if not seat:
        lesson.eyes_until = None
    audit(db, actor=viewer.name, action="lesson.unlock", target=f"lesson:{lesson.id}",
          detail={"seat": seat or "*"})
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: unlock {seat or 'all'}")
    return lesson


def eyes_on_me(db: Session, viewer: Viewer, *, lesson_id: str, seconds: int = 120, message: str = "",
               now: datetime | None = None) -> Lesson:
    """Every screen of the room shows the teacher's message (locked) for `seconds`."""
    now = now or utcnow()
    lesson = _acting(db, viewer, lesson_id, now)
    if not 10 <= seconds <= MAX_EYES_S:
        raise fail(Invalid, "lesson.bad_minutes", low=1, high=MAX_EYES_S // 60)
    lesson.eyes_until = min(now + timedelta(seconds=seconds), lesson.ends_at)
    lesson.lock_message = message.strip()[:200]
    audit(db, actor=viewer.name, action="lesson.eyes_on_me", target=f"lesson:{lesson.id}",
          detail={"seconds": seconds})
    sync_bundle(db, actor=viewer.name, comment=f"lesson {lesson.id}: eyes on me")
    return lesson


# ----------------------------------------------------------------------------- the bundle


def _bundle_lesson(lesson: Lesson, room: str, teacher: str) -> protocol.Lesson:
    sites = list(dict.fromkeys([*lesson.allow_list, *lesson.allowed_sites]))
    if lesson.mode != "allow_list":
        sites = list(lesson.allowed_sites)  # open / no internet: only what was allowed in the lesson
    return protocol.Lesson(id=lesson.id, room=room, teacher=teacher, mode=lesson.mode, allow_list=sites,
                           starts_at=lesson.starts_at, ends_at=lesson.ends_at,
                           locked_seats=list(lesson.locked_seats), lock_message=lesson.lock_message,
                           lock_at=lesson.lock_at, eyes_until=lesson.eyes_until)


def sync_bundle(db: Session, *, actor: str, comment: str,
                now: datetime | None = None) -> protocol.PolicyBundle:
    """Write the running lessons and their bans into the policy bundle (and push it)."""
    now = now or utcnow()
    db.flush()
    rows = db.execute(select(Lesson, Room.name, Person.username).join(Room, Room.id == Lesson.room_id)
                      .join(Person, Person.id == Lesson.teacher_id)
                      .where(Lesson.ended_at.is_(None), Lesson.ends_at > now)).all()
    lessons = [_bundle_lesson(lesson, room, teacher) for lesson, room, teacher in rows]
    by_id = {lesson.id: (lesson, room, teacher) for lesson, room, teacher in rows}
    bans = []
    if by_id:
        for entry in db.scalars(select(LessonBan).where(LessonBan.lesson_id.in_(list(by_id)),
                                                        LessonBan.lifted_at.is_(None))):
            lesson, room, teacher = by_id[entry.lesson_id]
            bans.append(protocol.Ban(id=entry.id, seat=entry.seat, os_user=entry.os_user,
                                     until=lesson.ends_at, reason=entry.reason, by=teacher, room=room,
                                     lesson_id=lesson.id))

    def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
        kept_bans = [b for b in bundle.bans if b.lesson_id is None and b.until > now]
        kept_lessons = [le for le in bundle.lessons if le.id not in by_id and le.ends_at > now
                        and not _is_table_lesson(db, le.id)]
        bundle.lessons = [*kept_lessons, *lessons]
        bundle.bans = [*kept_bans, *bans]
        return bundle

    return amend_policy(db, actor=actor, comment=comment, change=change)


def _is_table_lesson(db: Session, lesson_id: str) -> bool:
    return db.get(Lesson, lesson_id) is not None


def for_room(bundle: protocol.PolicyBundle, room: str | None) -> protocol.PolicyBundle:
    """The bundle an agent of `room` receives: only its room's lessons and bans (a ban made
    outside a lesson, by the responsible person, reaches every room)."""
    lessons = [le for le in bundle.lessons if room is not None and le.room == room]
    bans = [b for b in bundle.bans if b.room is None or b.room == room]
    if len(lessons) == len(bundle.lessons) and len(bans) == len(bundle.bans):
        return bundle
    return bundle.model_copy(update={"lessons": lessons, "bans": bans}).sealed()


@dataclass(frozen=True)
class FinishResult:
    ended: int


def finish_due(db: Session, *, now: datetime | None = None) -> FinishResult:
    """Lessons whose end has come: take them out of the bundle and make their summaries.
    (The agents already ended them at `ends_at` on their own; this is the server's side.)"""
    now = now or utcnow()
    due = list(db.scalars(select(Lesson).where(Lesson.summarised_at.is_(None), Lesson.ends_at <= now)))
    if not due:
        return FinishResult(0)
    from policy_server.lessons.summary import summarise

    for lesson in due:
        summarise(db, lesson, now=now)
    sync_bundle(db, actor="system", comment=f"{len(due)} lesson(s) ended on time", now=now)
    return FinishResult(len(due))


def seat_of_agent(db: Session, agent: Workstation) -> tuple[str | None, int | None]:
    return agent.seat, agent.room_id
