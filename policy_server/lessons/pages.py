"""The teacher's pages: home ("now" and "next", one click to start), the lesson page (live
seat map over SSE, actions), the lessons list and summaries, the timetable (periods, CSV
import, internet-use schedule, seating plan), notices.

Every action is a plain POST form with the CSRF token, answered with a redirect (works
without JavaScript); the seat map refreshes itself through htmx's SSE extension, served
from this server.  Scope: `scope.allow` on every route, the room scope in the services."""

from __future__ import annotations

import asyncio
import hmac
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import Person, Role, Room, SchoolClass, utcnow
from policy_server.db.session import get_db
from policy_server.errors import KalkanError
from policy_server.lessons import requests as lesson_requests
from policy_server.lessons import seats as seatmap
from policy_server.lessons import service as lessons
from policy_server.lessons.models import Lesson, LessonBan
from policy_server.notices import service as notices
from policy_server.timetable import service as timetable
from policy_server.timetable.errors import TEXTS
from policy_server.web import queries, templating
from policy_server.web.i18n import N_, translate
from policy_server.web.pages import Page

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
OWN_STATIC = Path(__file__).resolve().parent / "static"
LIVE_TICK_S = 0.1  # a cheap probe (three indexed queries) this often
LIVE_MIN_RENDER_S = 0.2  # the seat map is rendered at most this often (many seats streaming)
LIVE_FULL_REFRESH_S = 5.0  # and at least this often (offline seats, countdowns)
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'")

teachers = scope.allow(Role.admin, Role.teacher)
admins = scope.allow(Role.admin)
everyone = scope.allow(Role.admin, Role.teacher, Role.director, Role.district)

MODE_NAMES = {"open": N_("Open internet"), "allow_list": N_("Only the allowed sites"),
              "no_internet": N_("No internet")}
WEEKDAY_NAMES = (N_("Monday"), N_("Tuesday"), N_("Wednesday"), N_("Thursday"), N_("Friday"), N_("Saturday"),
                 N_("Sunday"))
DONE = {
    "started": N_("The lesson has started. The seats get its rules within two seconds."),
    "ended": N_("The lesson has ended. Everything it set is lifted."),
    "extended": N_("The lesson is extended."),
    "banned": N_("Internet is off for that seat until the lesson ends."),
    "unbanned": N_("Internet is back on for that seat."),
    "allowed": N_("The site is open for the rest of this lesson."),
    "forwarded": N_("The request is sent to the responsible person's queue."),
    "locked": N_("The screens are being locked."),
    "unlocked": N_("The screens are unlocked."),
    "eyes": N_("Every screen shows your message now."),
    "preset": N_("Your one-click preset is saved."),
    "scene": N_("The scene is saved."),
    "scene_deleted": N_("The scene is deleted."),
    "period": N_("The period is added."),
    "period_deleted": N_("The period is deleted."),
    "imported": N_("The timetable is imported."),
    "classes_imported": N_("The class list is imported."),
    "schedule": N_("The internet-use schedule is saved."),
    "seating": N_("The seating plan is saved."),
    "layout": N_("The seat map is saved."),
    "read": N_("Marked as read."),
    "settings": N_("Saved."),
}


# ----------------------------------------------------------------------------- helpers


def _page(request: Request, db: Session) -> Page:
    from policy_server.people import auth

    request.state.lessons_db = db
    return Page.for_request(request, auth.optional_person(request, db),
                            default_language=queries.school_language(db))


def _render(page: Page, template: str, *, live: bool = False, status_code: int = 200, **context) -> Response:
    done = page.request.query_params.get("done")
    context.setdefault("notice", page._(DONE[done]) if done in DONE else None)
    context.setdefault("errors", [])
    response = page.render(template, status_code=status_code, mode_names=MODE_NAMES,
                           weekday_names=WEEKDAY_NAMES,
                           hhmm=hhmm, live=live, unread=_unread(page), **context)
    response.headers["Content-Security-Policy"] = CSP
    return response


def _unread(page: Page) -> int:
    """The notices badge (counted in the request's own session: on SQLite a second one would
    wait for this one's write lock)."""
    viewer = getattr(page.request.state, "viewer", None)
    db = getattr(page.request.state, "lessons_db", None)
    if viewer is None or db is None:
        return 0
    return notices.unread_count(db, viewer)


def hhmm(value: datetime | None) -> str:
    return timetable.local_now(value).strftime("%H:%M") if value else "—"


def _csrf_ok(page: Page, token: str) -> bool:
    return bool(page.csrf_token and token and hmac.compare_digest(page.csrf_token, token))


def _redirect(url: str, done: str) -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}{urlencode({'done': done})}", status_code=303)


def _message(page: Page, exc: KalkanError) -> str:
    return exc.in_language(page.language)


def _act(request: Request, db: Session, token: str, back: str, done: str, action, *,
         on_error=None) -> Response:
    """Run a form's action: CSRF check, the service call, commit, redirect; an error shows the
    page again with the message (GOV.UK-style summary), nothing stored."""
    page = _page(request, db)
    if not _csrf_ok(page, token):
        return page.error_page(403, page._("The form's security token is missing or out of date. "
                                           "Go back, reload the page and try again."))
    try:
        result = action()
        db.commit()
    except KalkanError as exc:
        db.rollback()
        if exc.status_code == 404:
            return page.error_page(404, _message(page, exc))
        if on_error is not None:
            return on_error(page, [_message(page, exc)])
        return page.error_page(422, _message(page, exc))
    return _redirect(result if isinstance(result, str) and result.startswith("/") else back, done)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------- static files


@router.get("/static/htmx.min.js", dependencies=[Depends(scope.public)])
def htmx_js() -> FileResponse:
    return FileResponse(STATIC / "htmx.min.js", media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/htmx-sse.js", dependencies=[Depends(scope.public)])
def htmx_sse_js() -> FileResponse:
    return FileResponse(STATIC / "htmx-sse.js", media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/lessons.css", dependencies=[Depends(scope.public)])
def lessons_css() -> FileResponse:
    return FileResponse(OWN_STATIC / "lessons.css", media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})


# ----------------------------------------------------------------------------- the teacher's home


def _home(page: Page, db: Session, viewer: scope.Viewer, *, errors: list[str] | None = None,
          status_code: int = 200) -> Response:
    now = utcnow()
    current, upcoming = timetable.now_and_next(db, viewer.person, now)
    running = lessons.running_for_teacher(db, viewer.person, now)
    preset = lessons.preset_of(db, viewer.person)
    rooms = lessons.viewer_rooms(db, viewer)
    return _render(page, "lessons/home.html", status_code=status_code, page_title=page._("My lessons"),
                   section="teach", current=current, upcoming=upcoming, running=running,
                   rooms={r.id: r.name for r in rooms}, room_list=rooms, preset=preset,
                   scenes=lessons.scenes_of(db, viewer.person), errors=errors or [],
                   default_end=hhmm(now + timedelta(minutes=45)),
                   today=timetable.teacher_periods_on(db, viewer.person, timetable.local_now(now).date()),
                   recent=lessons.list_lessons(db, viewer, limit=10), now_hhmm=hhmm(now))


@router.get("/teach")
def teach_home(request: Request, viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)):
    return _home(_page(request, db), db, viewer)


def _home_error(db, viewer):
    return lambda page, errors: _home(page, db, viewer, errors=errors, status_code=422)


@router.post("/teach/start")
def teach_start(request: Request, csrf_token: str = Form(""), period_id: str = Form(""),
                room_id: str = Form(""),
                until: str = Form(""), mode: str = Form(""), scene_id: str = Form(""),
                viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    def action() -> str:
        ends_at = None
        if until.strip():
            now = utcnow()
            ends_at = timetable.at_local(timetable.local_now(now).date(), timetable.parse_hhmm(until))
        lesson = lessons.start_lesson(db, viewer, period_id=_int(period_id), room_id=_int(room_id),
                                      ends_at=ends_at, mode=mode or None, scene_id=_int(scene_id))
        return f"/lessons/{lesson.id}"

    return _act(request, db, csrf_token, "/teach", "started", action, on_error=_home_error(db, viewer))


@router.post("/teach/preset")
def teach_preset(request: Request, csrf_token: str = Form(""), mode: str = Form("open"),
                 scene_id: str = Form(""), viewer: scope.Viewer = Depends(teachers),
                 db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/teach", "preset",
                lambda: lessons.save_preset(db, viewer, mode=mode, scene_id=_int(scene_id)),
                on_error=_home_error(db, viewer))


@router.post("/teach/scenes")
def teach_scene(request: Request, csrf_token: str = Form(""), name: str = Form(""), sites: str = Form(""),
                scene_id: str = Form(""), viewer: scope.Viewer = Depends(teachers),
                db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/teach", "scene",
                lambda: lessons.save_scene(db, viewer, name=name, sites=sites, scene_id=_int(scene_id)),
                on_error=_home_error(db, viewer))


@router.post("/teach/scenes/{scene_id}/delete")
def teach_scene_delete(request: Request, scene_id: int, csrf_token: str = Form(""),
                       viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/teach", "scene_deleted",
                lambda: lessons.delete_scene(db, viewer, scene_id=scene_id), on_error=_home_error(db, viewer))


# ----------------------------------------------------------------------------- the lesson page


def _lesson_context(db: Session, viewer: scope.Viewer, lesson: Lesson, *, held: bool = False) -> dict:
    """`held`: also the unblock requests the lesson holds (the full page only: it folds new
    events into the queue, a write the live stream's read-only session must not make)."""
    now = utcnow()
    room = db.get(Room, lesson.room_id)
    teacher = db.get(Person, lesson.teacher_id)
    cls = db.get(SchoolClass, lesson.class_id) if lesson.class_id else None
    running = lessons.is_running(lesson, now)
    state = seatmap.live_state(db, lesson, now=now) if running else None
    rows = sorted({s.row for s in state.seats}) if state else []
    return {"lesson": lesson, "room": room, "teacher": teacher, "school_class": cls, "running": running,
            "state": state, "row_index": {r: i + 1 for i, r in enumerate(rows)},
            "can_act": running and (viewer.role == Role.admin or lesson.teacher_id == viewer.person.id),
            "summary": lesson.summary, "ends": hhmm(lesson.ends_at),
            "extend_left": lessons.MAX_EXTENSION_MIN - lesson.extended_min,
            "minutes_left": max(0, int((lesson.ends_at - now).total_seconds() // 60)) if running else 0,
            "held_requests": lesson_requests.of_lesson(db, lesson, now=now) if running and held else []}


def _lesson_page(page: Page, db: Session, viewer: scope.Viewer, lesson_id: str, *, errors=None,
                 status_code: int = 200) -> Response:
    lesson = lessons.get_lesson(db, viewer, lesson_id)
    ctx = _lesson_context(db, viewer, lesson, held=True)
    title = page._("Lesson in %(room)s", room=ctx["room"].name if ctx["room"] else "")
    return _render(page, "lessons/lesson.html", live=ctx["running"], status_code=status_code,
                   page_title=title,
                   section="teach", errors=errors or [], **ctx)


@router.get("/lessons")
def lesson_list(request: Request, viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)):
    page = _page(request, db)
    rows = lessons.list_lessons(db, viewer, limit=100)
    rooms = {r.id: r.name for r in db.scalars(select(Room))}
    people = {p.id: p.full_name or p.username for p in db.scalars(select(Person))}
    return _render(page, "lessons/list.html", page_title=page._("Lessons"), section="lessons", rows=rows,
                   rooms=rooms, people=people, now=utcnow())


@router.get("/lessons/{lesson_id}")
def lesson_page(request: Request, lesson_id: str, viewer: scope.Viewer = Depends(teachers),
                db: Session = Depends(get_db)) -> Response:
    page = _page(request, db)
    try:
        return _lesson_page(page, db, viewer, lesson_id)
    except KalkanError as exc:
        return page.error_page(exc.status_code, _message(page, exc))


@router.get("/lessons/{lesson_id}/seats")
def lesson_seats(request: Request, lesson_id: str, viewer: scope.Viewer = Depends(teachers),
                 db: Session = Depends(get_db)) -> Response:
    """The seat map alone (the live stream's fragment; also a plain reload target)."""
    page = _page(request, db)
    try:
        lesson = lessons.get_lesson(db, viewer, lesson_id)
    except KalkanError as exc:
        return page.error_page(exc.status_code, _message(page, exc))
    ctx = _lesson_context(db, viewer, lesson)
    # An ended lesson has no live seat map: an empty one, never a server error (found by
    # tests/server/test_authorisation_matrix.py).
    html = _seats_html(page.language, page.csrf_token or "", ctx) if ctx["state"] is not None else \
        '<div class="seats" aria-live="polite"></div>'
    return Response(html, media_type="text/html", headers={"Cache-Control": "no-store"})


def _seats_html(language: str, csrf_token: str, ctx: dict) -> str:
    return templating.render(language, "lessons/_seats.html", csrf_token=csrf_token, hhmm=hhmm, **ctx)


def _live_viewer(request: Request) -> scope.Viewer:
    """`scope.allow(admin, teacher)` in a short session of its own: a streaming response must
    not hold a database session (on SQLite every transaction holds the write lock)."""
    from policy_server.people import auth

    with request.app.state.sessionmaker() as db:
        person = auth.optional_person(request, db)
        if person is None:
            raise scope.NotLoggedIn("You are not logged in (or your session expired). Log in again.",
                                    code="auth.required")
        if person.role not in (Role.admin, Role.teacher):
            raise scope.NotAllowed("Your role may not see or do this.", code="auth.forbidden")
        viewer = scope.viewer_for(db, person)
        db.expunge(person)
    return viewer


_live_viewer.kalkan_scope = ("roles", frozenset({str(Role.admin),
                                                 str(Role.teacher)}))  # type: ignore[attr-defined]


@router.get("/lessons/{lesson_id}/live")
async def lesson_live(request: Request, lesson_id: str, viewer: scope.Viewer = Depends(_live_viewer)):
    """Server-sent events: `seats` (the seat map's HTML) whenever something changed (checked
    every 0.25 s), `ended` when the lesson is over."""
    from policy_server.db.session import make_sessionmaker, read_only_engine

    sessions = getattr(request.app.state, "lessons_read_sessions", None)
    if sessions is None:  # reads only: no SQLite write lock held against the agents' uploads
        sessions = request.app.state.lessons_read_sessions = make_sessionmaker(
            read_only_engine(request.app.state.engine))

    def check() -> Page:
        with sessions() as db:
            page = _page(request, db)
            lessons.get_lesson(db, viewer, lesson_id)  # 404 outside the viewer's rooms
            return page

    page = await asyncio.to_thread(check)
    language, token = page.language, page.csrf_token or ""

    def probe() -> tuple:
        """What changes the seat map: new activity, the lesson's controls, bans (cheap)."""
        with sessions() as db:
            row = db.execute(select(Lesson.ends_at, Lesson.ended_at, Lesson.locked_seats, Lesson.lock_at,
                                    Lesson.eyes_until, Lesson.allowed_sites)
                             .where(Lesson.id == lesson_id)).one()
            newest = seatmap.last_activity_id(db, lesson_id)
            bans = db.scalar(select(func.count()).select_from(LessonBan)
                             .where(LessonBan.lesson_id == lesson_id, LessonBan.lifted_at.is_(None)))
        ended = row.ended_at is not None or row.ends_at <= utcnow()
        return (ended, row.ends_at, tuple(row.locked_seats or ()), row.lock_at, row.eyes_until,
                tuple(row.allowed_sites or ()), newest, bans)

    def render() -> str | None:
        with sessions() as db:
            ctx = _lesson_context(db, viewer, db.get(Lesson, lesson_id))
            return _seats_html(language, token, ctx) if ctx["running"] else None

    async def stream():
        last_probe = None
        last_render = 0.0
        loop = asyncio.get_running_loop()
        yield "retry: 1000\n\n"
        while True:
            if await request.is_disconnected():
                return
            probed = await asyncio.to_thread(probe)
            if probed[0]:
                yield "event: ended\ndata: ended\n\n"
                return
            now = loop.time()
            changed = probed != last_probe
            due = now - last_render > LIVE_FULL_REFRESH_S
            if (changed and now - last_render >= LIVE_MIN_RENDER_S) or due:
                html = await asyncio.to_thread(render)
                last_probe, last_render = probed, loop.time()
                if html is not None:
                    data = "\n".join(f"data: {line}" for line in html.splitlines() if line.strip())
                    yield f"event: seats\n{data}\n\n"
            await asyncio.sleep(LIVE_TICK_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _lesson_action(request: Request, db: Session, viewer, lesson_id: str, token: str, done: str, action):
    back = f"/lessons/{lesson_id}"
    return _act(request, db, token, back, done, action,
                on_error=lambda page, errors: _lesson_page(page, db, viewer, lesson_id, errors=errors,
                                                           status_code=422))


@router.post("/lessons/{lesson_id}/end")
def form_end(request: Request, lesson_id: str, csrf_token: str = Form(""),
             viewer: scope.Viewer = Depends(teachers),
             db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "ended",
                          lambda: lessons.end_lesson(db, viewer, lesson_id=lesson_id))


@router.post("/lessons/{lesson_id}/extend")
def form_extend(request: Request, lesson_id: str, csrf_token: str = Form(""), minutes: str = Form("5"),
                viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "extended",
                          lambda: lessons.extend_lesson(db, viewer, lesson_id=lesson_id,
                                                        minutes=_int(minutes) or 0))


@router.post("/lessons/{lesson_id}/ban")
def form_ban(request: Request, lesson_id: str, csrf_token: str = Form(""), seat: str = Form(""),
             os_user: str = Form(""), viewer: scope.Viewer = Depends(teachers),
             db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "banned",
                          lambda: lessons.ban(db, viewer, lesson_id=lesson_id, seat=seat or None,
                                              os_user=os_user or None))


@router.post("/lessons/{lesson_id}/unban")
def form_unban(request: Request, lesson_id: str, csrf_token: str = Form(""), seat: str = Form(""),
               ban_id: str = Form(""), viewer: scope.Viewer = Depends(teachers),
               db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "unbanned",
                          lambda: lessons.unban(db, viewer, lesson_id=lesson_id, seat=seat or None,
                                                ban_id=ban_id or None))


@router.post("/lessons/{lesson_id}/allow")
def form_allow(request: Request, lesson_id: str, csrf_token: str = Form(""), site: str = Form(""),
               viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "allowed",
                          lambda: lessons.allow_site(db, viewer, lesson_id=lesson_id, site=site))


@router.post("/lessons/{lesson_id}/requests/{request_id}/allow")
def form_request_allow(request: Request, lesson_id: str, request_id: int, csrf_token: str = Form(""),
                       viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "allowed",
                          lambda: lesson_requests.allow_in_lesson(db, viewer, lesson_id=lesson_id,
                                                                  request_id=request_id))


@router.post("/lessons/{lesson_id}/requests/{request_id}/forward")
def form_request_forward(request: Request, lesson_id: str, request_id: int, csrf_token: str = Form(""),
                         viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "forwarded",
                          lambda: lesson_requests.forward(db, viewer, lesson_id=lesson_id,
                                                          request_id=request_id))


@router.post("/lessons/{lesson_id}/lock")
def form_lock(request: Request, lesson_id: str, csrf_token: str = Form(""), seat: str = Form(""),
              message: str = Form(""), countdown_s: str = Form("0"), viewer: scope.Viewer = Depends(teachers),
              db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "locked",
                          lambda: lessons.lock(db, viewer, lesson_id=lesson_id, seat=seat or None,
                                               message=message,
                                               countdown_s=_int(countdown_s) or 0))


@router.post("/lessons/{lesson_id}/unlock")
def form_unlock(request: Request, lesson_id: str, csrf_token: str = Form(""), seat: str = Form(""),
                viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "unlocked",
                          lambda: lessons.unlock(db, viewer, lesson_id=lesson_id, seat=seat or None))


@router.post("/lessons/{lesson_id}/eyes")
def form_eyes(request: Request, lesson_id: str, csrf_token: str = Form(""), message: str = Form(""),
              seconds: str = Form("120"), viewer: scope.Viewer = Depends(teachers),
              db: Session = Depends(get_db)) -> Response:
    return _lesson_action(request, db, viewer, lesson_id, csrf_token, "eyes",
                          lambda: lessons.eyes_on_me(db, viewer, lesson_id=lesson_id, message=message,
                                                     seconds=_int(seconds) or 0))


# ----------------------------------------------------------------------------- the timetable


def _timetable(page: Page, db: Session, viewer: scope.Viewer, *, errors=None, problems=None,
               status_code: int = 200, csv_text: str = "", classes_text: str = "") -> Response:
    year = timetable.school_year_of(timetable.local_now(utcnow()).date())
    chosen = page.request.query_params.get("year") or year
    return _render(page, "timetable/timetable.html", status_code=status_code, page_title=page._("Timetable"),
                   section="timetable", periods=timetable.list_periods(db, viewer),
                   rooms=lessons.viewer_rooms(db, viewer), classes=timetable.list_classes(db, viewer),
                   teachers=list(db.scalars(select(Person).where(Person.role.in_((Role.teacher, Role.admin)),
                                                                 Person.disabled.is_(False))
                                            .order_by(Person.username))),
                   is_admin=viewer.role == Role.admin, errors=errors or [], problems=problems or [],
                   year=chosen, bands=timetable.internet_schedule(db, chosen), csv_text=csv_text,
                   classes_text=classes_text,
                   accounts=timetable.student_accounts(db) if viewer.role == Role.admin else {})


@router.get("/timetable")
def timetable_page(request: Request, viewer: scope.Viewer = Depends(teachers), db: Session = Depends(get_db)):
    return _timetable(_page(request, db), db, viewer)


def _tt_error(db, viewer):
    return lambda page, errors: _timetable(page, db, viewer, errors=errors, status_code=422)


@router.post("/timetable/periods")
def form_period(request: Request, csrf_token: str = Form(""), weekday: str = Form(""), starts: str = Form(""),
                ends: str = Form(""), room: str = Form(""), school_class: str = Form(""),
                teacher: str = Form(""), viewer: scope.Viewer = Depends(admins),
                db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/timetable", "period",
                lambda: timetable.add_period(db, viewer, weekday=weekday, starts=starts, ends=ends, room=room,
                                             school_class=school_class, teacher=teacher),
                on_error=_tt_error(db, viewer))


@router.post("/timetable/periods/{period_id}/delete")
def form_period_delete(request: Request, period_id: int, csrf_token: str = Form(""),
                       viewer: scope.Viewer = Depends(admins), db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/timetable", "period_deleted",
                lambda: timetable.delete_period(db, viewer, period_id=period_id), on_error=_tt_error(db,
                                                                                                     viewer))


async def _import_csv(request: Request, db: Session, viewer: scope.Viewer, *, text_field: str,
                      importer, done: str) -> Response:
    """A CSV import form of the timetable page (periods, or classes): the uploaded file or the
    pasted text, all or nothing; bad rows named by line, the text kept in its box to fix."""
    form = await request.form()
    upload = form.get("file")
    text = str(form.get(text_field) or "")
    if isinstance(upload, UploadFile) or hasattr(upload, "read"):
        raw = await upload.read()
        if raw:
            text = raw.decode("utf-8-sig", errors="replace")
    token = str(form.get("csrf_token") or "")

    def run() -> Response:
        page = _page(request, db)
        if not _csrf_ok(page, token):
            return page.error_page(403, page._("The form's security token is missing or out of date. "
                                               "Go back, reload the page and try again."))
        kept = {text_field: text}
        try:
            _count, problems = importer(db, viewer, text=text)
        except KalkanError as exc:
            db.rollback()
            return _timetable(page, db, viewer, errors=[_message(page, exc)], status_code=422, **kept)
        if problems:
            db.rollback()
            rows = [{"line": p.line, "text": translate(page.language, TEXTS[p.message_code], **p.params)}
                    for p in problems]
            return _timetable(page, db, viewer, status_code=422, problems=rows, **kept,
                              errors=[translate(page.language, TEXTS["timetable.csv_errors"],
                                                count=len(rows))])
        db.commit()
        return _redirect("/timetable", done)

    return await asyncio.to_thread(run)


@router.post("/timetable/import")
async def form_import(request: Request, viewer: scope.Viewer = Depends(admins),
                      db: Session = Depends(get_db)):
    return await _import_csv(request, db, viewer, text_field="csv_text", importer=timetable.import_csv,
                             done="imported")


@router.post("/timetable/classes/import")
async def form_import_classes(request: Request, viewer: scope.Viewer = Depends(admins),
                              db: Session = Depends(get_db)):
    """The class list (and students' OS accounts → class) from CSV, all or nothing."""
    return await _import_csv(request, db, viewer, text_field="classes_text",
                             importer=timetable.import_classes_csv, done="classes_imported")


@router.post("/timetable/schedule")
def form_schedule(request: Request, csrf_token: str = Form(""), year: str = Form(""), bands: str = Form(""),
                  viewer: scope.Viewer = Depends(admins), db: Session = Depends(get_db)) -> Response:
    def action():
        parsed = []
        for line in bands.splitlines():
            parts = line.replace(",", " ").replace("–", " ").replace("-", " ").split()
            if not parts:
                continue
            if len(parts) != 3:
                raise timetable.fail(timetable.Invalid, "timetable.bad_time", value=line.strip()[:40])
            parsed.append((parts[0], parts[1], parts[2]))
        timetable.set_internet_schedule(db, viewer, school_year=year, bands=parsed)
        return f"/timetable?{urlencode({'year': year})}"

    return _act(request, db, csrf_token, "/timetable", "schedule", action, on_error=_tt_error(db, viewer))


@router.get("/timetable/seating")
def seating_page(request: Request, class_id: int, room_id: int, viewer: scope.Viewer = Depends(teachers),
                 db: Session = Depends(get_db)) -> Response:
    page = _page(request, db)
    cls = db.get(SchoolClass, class_id)
    if cls is None or not viewer.may_see_class(class_id) or not viewer.may_see_room(room_id):
        return page.error_page(404, page._(TEXTS["timetable.period_not_found"]))
    room = lessons.room_of(db, viewer, room_id)
    return _render(page, "timetable/seating.html", page_title=page._("Seating plan"), section="timetable",
                   school_class=cls, room=room, layout=timetable.room_layout(db, room_id),
                   seating=timetable.seating_of(db, class_id, room_id))


@router.post("/timetable/seating")
async def form_seating(request: Request, viewer: scope.Viewer = Depends(teachers),
                       db: Session = Depends(get_db)):
    form = await request.form()
    class_id, room_id = _int(str(form.get("class_id"))), _int(str(form.get("room_id")))

    def action():
        for key, value in form.multi_items():
            if key.startswith("seat:"):
                timetable.set_seating(db, viewer, class_id=class_id or 0, room_id=room_id or 0, seat=key[5:],
                                      student=str(value))
        return f"/timetable/seating?{urlencode({'class_id': class_id, 'room_id': room_id})}"

    return await asyncio.to_thread(_act, request, db, str(form.get("csrf_token") or ""), "/timetable",
                                   "seating",
                                   action)


@router.get("/timetable/layout")
def layout_page(request: Request, room_id: int, viewer: scope.Viewer = Depends(admins),
                db: Session = Depends(get_db)) -> Response:
    """Where each seat stands in the room (row and column of the lesson's seat map)."""
    page = _page(request, db)
    try:
        room = lessons.room_of(db, viewer, room_id)
    except KalkanError as exc:
        return page.error_page(exc.status_code, _message(page, exc))
    return _render(page, "timetable/layout.html", page_title=page._("Seat map of the room"),
                   section="timetable",
                   room=room, layout=timetable.room_layout(db, room_id))


@router.post("/timetable/layout")
async def form_layout(request: Request, viewer: scope.Viewer = Depends(admins),
                      db: Session = Depends(get_db)):
    form = await request.form()
    room_id = _int(str(form.get("room_id"))) or 0

    def action():
        lessons.room_of(db, viewer, room_id)
        taken: dict[str, str] = {}
        for key, value in form.multi_items():
            if key.startswith("place:"):
                spot = str(value).replace(" ", "")
                if spot in taken:
                    raise timetable.fail(timetable.Invalid, "timetable.place_taken", seat=key[6:],
                                         other=taken[spot], value=spot[:20])
                taken[spot] = key[6:]
        for key, value in form.multi_items():
            if key.startswith("place:"):
                row_text, _, col_text = str(value).partition(",")
                row, col = _int(row_text.strip()), _int(col_text.strip())
                if row is None or col is None or not (1 <= row <= 10 and 1 <= col <= 6):
                    raise timetable.fail(timetable.Invalid, "timetable.bad_place", seat=key[6:],
                                         value=str(value)[:20])
                timetable.set_seat_place(db, viewer, room_id=room_id, seat=key[6:], row=row - 1, col=col - 1)
        return f"/timetable/layout?{urlencode({'room_id': room_id})}"

    def again(page: Page, errors: list[str]) -> Response:
        room = lessons.room_of(db, viewer, room_id)
        return _render(page, "timetable/layout.html", status_code=422,
                       page_title=page._("Seat map of the room"), section="timetable", room=room,
                       layout=timetable.room_layout(db, room_id), errors=errors)

    return await asyncio.to_thread(_act, request, db, str(form.get("csrf_token") or ""), "/timetable",
                                   "layout", action, on_error=again)


# ----------------------------------------------------------------------------- notices


def _notices(page: Page, db: Session, viewer: scope.Viewer, *, errors=None,
             status_code: int = 200) -> Response:
    smtp = notices.smtp_settings(db) if viewer.role == Role.admin else None
    return _render(page, "notices/notices.html", status_code=status_code, page_title=page._("Notices"),
                   section="notices", rows=notices.list_notices(db, viewer), errors=errors or [],
                   email=notices.address_of(db,
                                            viewer.person.id), is_admin=viewer.role == Role.admin, smtp=smtp)


@router.get("/notices")
def notices_page(request: Request, viewer: scope.Viewer = Depends(everyone), db: Session = Depends(get_db)):
    return _notices(_page(request, db), db, viewer)


@router.post("/notices/read")
def form_read(request: Request, csrf_token: str = Form(""), notice_id: str = Form(""),
              viewer: scope.Viewer = Depends(everyone), db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/notices", "read",
                lambda: notices.mark_read(db, viewer, notice_id=_int(notice_id)))


@router.post("/notices/address")
def form_address(request: Request, csrf_token: str = Form(""), email: str = Form(""),
                 viewer: scope.Viewer = Depends(everyone), db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/notices", "settings", lambda: notices.set_address(db, viewer,
                                                                                             email=email),
                on_error=lambda page, errors: _notices(page, db, viewer, errors=errors, status_code=422))


@router.post("/notices/smtp")
def form_smtp(request: Request, csrf_token: str = Form(""), host: str = Form(""), port: str = Form("587"),
              sender: str = Form(""), username: str = Form(""), password: str = Form(""),
              starttls: str = Form(""), viewer: scope.Viewer = Depends(admins),
              db: Session = Depends(get_db)) -> Response:
    return _act(request, db, csrf_token, "/notices", "settings",
                lambda: notices.set_smtp(db, viewer, host=host, port=_int(port) or 0, sender=sender,
                                         username=username, password=password or None,
                                         starttls=bool(starttls)),
                on_error=lambda page, errors: _notices(page, db, viewer, errors=errors, status_code=422))

