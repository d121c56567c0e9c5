"""Rooms, seats and enrolment pages of the responsible person's console (issue 11).

/rooms                      rooms with their seat counts; add a room with a layout
/rooms/{id}                 the seat layout, who sits where, retired seats; edit the layout
/rooms/{id}/codes (POST)    an enrolment code, shown once with the exact command per seat
/seats/{agent_id}/retire    revoke the workstation's token (its history stays)
/seats/{agent_id}/reenrol   retire it and print a one-use code for the same seat (--force)
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console.kit import FormErrors, csrf_ok, csrf_refused, page_of, redirect, service_error
from policy_server.db.models import Role, Workstation
from policy_server.db.session import get_db
from policy_server.errors import KalkanError, NotFound
from policy_server.school import service
from policy_server.web.i18n import N_

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)

NOTICES = {
    "room": N_("The room is added. Make an enrolment code below to enrol its workstations."),
    "layout": N_("The seat layout is saved."),
    "retired": N_("The workstation is retired: its token no longer works; its history is kept."),
}
EXPIRY_CHOICES = (("1h", N_("1 hour")), ("1d", N_("1 day")), ("7d", N_("7 days")), ("30d", N_("30 days")))


def _int(value: str, default: int = 0) -> int:
    try:
        return int(value.strip())
    except (ValueError, AttributeError):
        return default


def _fingerprint(request: Request) -> str | None:
    """The served certificate's SHA-256 (policy_server/certs/served.py: after `tls activate` and
    before the restart, still the one the seats meet)."""
    settings = request.app.state.settings
    if not getattr(settings, "tls", False):
        return None
    from policy_server.certs.served import served_fingerprint

    return served_fingerprint(settings)


def _pin(request: Request) -> str | None:
    """The server's public-key pin the seat-install command carries (None without TLS)."""
    settings = request.app.state.settings
    if not getattr(settings, "tls", False):
        return None
    from policy_server.certs.served import served_pubkey_pin

    return served_pubkey_pin(settings)


def _server_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _rooms_page(page, db, *, errors: FormErrors | None = None, values: dict | None = None,
                status_code: int = 200, notice: str | None = None) -> Response:
    return page.render("school/rooms.html", status_code=status_code, page_title=page._("Rooms and enrolment"),
                       section="rooms", rooms=service.room_views(db), errors=errors or FormErrors(),
                       values=values or {"name": "", "rows": "4", "columns": "4"}, notice=notice,
                       expiry_choices=EXPIRY_CHOICES, max_rows=service.MAX_ROWS)


@router.get("/rooms")
def rooms(request: Request, done: str = "", viewer: scope.Viewer = Depends(ADMIN),
          db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    return _rooms_page(page, db, notice=page._(NOTICES[done]) if done in NOTICES else None)


@router.post("/rooms")
def room_create(request: Request, csrf_token: str = Form(""), name: str = Form(""), rows: str = Form("4"),
                columns: str = Form("4"), viewer: scope.Viewer = Depends(ADMIN),
                db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    values = {"name": name, "rows": rows, "columns": columns}
    errors = FormErrors()
    if not name.strip():
        errors.add("name", page._("Enter the room's name, e.g. Lab 1"))
    r, c = _int(rows), _int(columns)
    if not (1 <= r <= service.MAX_ROWS and 1 <= c <= service.MAX_COLUMNS):
        errors.add("rows", page._("Rows and columns are whole numbers from 1 to %(num)d.",
                                  num=service.MAX_ROWS))
    if errors:
        return _rooms_page(page, db, errors=errors, values=values, status_code=422)
    try:
        room = service.create_room_with_layout(db, actor=viewer.person.username, name=name, rows=r, columns=c)
    except KalkanError as exc:
        db.rollback()
        errors.add("name", service_error(page, exc))
        return _rooms_page(page, db, errors=errors, values=values, status_code=exc.status_code)
    db.commit()
    return redirect(f"/rooms/{room.id}", done="room")


def _room_page(page, db, room_id: int, *, errors: FormErrors | None = None, values: dict | None = None,
               status_code: int = 200, notice: str | None = None) -> Response:
    view = service.room_view(db, room_id)
    if values is None:
        values = {"rows": str(view.layout.rows) if view.layout else "4",
                  "columns": str(view.layout.columns) if view.layout else "4",
                  "seat_names": " ".join(view.layout.seat_names) if view.layout else ""}
    return page.render("school/room.html", status_code=status_code, page_title=view.room.name,
                       section="rooms", view=view, errors=errors or FormErrors(), values=values,
                       notice=notice, expiry_choices=EXPIRY_CHOICES)


@router.get("/rooms/{room_id}")
def room(request: Request, room_id: int, done: str = "", viewer: scope.Viewer = Depends(ADMIN),
         db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    try:
        return _room_page(page, db, room_id, notice=page._(NOTICES[done]) if done in NOTICES else None)
    except NotFound:
        return page.error_page(404, page._("There is no such room."))


@router.post("/rooms/{room_id}/layout")
def room_layout(request: Request, room_id: int, csrf_token: str = Form(""), rows: str = Form(""),
                columns: str = Form(""), seat_names: str = Form(""), viewer: scope.Viewer = Depends(ADMIN),
                db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    values = {"rows": rows, "columns": columns, "seat_names": seat_names}
    r, c = _int(rows), _int(columns)
    names = service.parse_seat_names(seat_names)
    try:
        layout_before = service.room_view(db, room_id).layout
        if layout_before is not None and (r, c) != (layout_before.rows, layout_before.columns) and \
                names == list(layout_before.seat_names):
            names = []  # the size changed: keep the names that fit, add new ones
        service.set_layout(db, actor=viewer.person.username, room_id=room_id, rows=r, columns=c,
                           seat_names=names)
    except NotFound:
        return page.error_page(404, page._("There is no such room."))
    except KalkanError as exc:
        db.rollback()
        errors = FormErrors()
        seat_problem = (exc.code or "").startswith("room.seat") or exc.code == "room.bad_seat_name"
        errors.add("seat_names" if seat_problem else "rows", service_error(page, exc))
        return _room_page(page, db, room_id, errors=errors, values=values, status_code=exc.status_code)
    db.commit()
    return redirect(f"/rooms/{room_id}", done="layout")


def _slip_page(page, slip: service.EnrolmentSlip, *, reenrol: bool = False) -> Response:
    return page.render("school/code.html", page_title=page._("Enrolment code"), section="rooms", slip=slip,
                       reenrol=reenrol)


@router.post("/rooms/{room_id}/codes")
def room_code(request: Request, room_id: int, csrf_token: str = Form(""), uses: str = Form("1"),
              expires: str = Form("1d"), viewer: scope.Viewer = Depends(ADMIN),
              db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    n = _int(uses, -1)
    try:
        slip = service.make_enrolment(db, actor=viewer.person.username, room_id=room_id, uses=n,
                                      expires=expires, server_url=_server_url(request),
                                      fingerprint=_fingerprint(request), pin=_pin(request))
    except NotFound:
        return page.error_page(404, page._("There is no such room."))
    except KalkanError as exc:
        db.rollback()
        errors = FormErrors()
        errors.add("uses", service_error(page, exc))
        return _room_page(page, db, room_id, errors=errors, status_code=exc.status_code)
    db.commit()
    return _slip_page(page, slip)


@router.post("/seats/{agent_id}/retire")
def seat_retire(request: Request, agent_id: str, csrf_token: str = Form(""), reason: str = Form(""),
                viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        ws = service.retire_workstation(db, actor=viewer.person.username, agent_id=agent_id, reason=reason)
    except NotFound:
        return page.error_page(404, page._("There is no such workstation."))
    room_id = ws.room_id
    db.commit()
    return redirect(f"/rooms/{room_id}" if room_id else "/rooms", done="retired")


@router.post("/seats/{agent_id}/reenrol")
def seat_reenrol(request: Request, agent_id: str, csrf_token: str = Form(""),
                 viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    ws = db.get(Workstation, agent_id)
    if ws is None:
        return page.error_page(404, page._("There is no such workstation."))
    seat = ws.seat
    if not ws.token_revoked:
        service.retire_workstation(db, actor=viewer.person.username, agent_id=agent_id, reason="re-enrol")
    slip = service.make_enrolment(db, actor=viewer.person.username, room_id=ws.room_id, uses=1, expires="1d",
                                  server_url=_server_url(request), fingerprint=_fingerprint(request),
                                  seats=[seat] if seat else [], pin=_pin(request))
    db.commit()
    return _slip_page(page, slip, reenrol=True)
