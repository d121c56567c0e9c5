"""The responsible person's pages for people: list, create, edit, disable/enable, password reset,
and everyone's own "change my password" page (a temporary password must be changed first).

Every route declares its scope (`scope.allow`); every change is a POST form with the CSRF
token, answered with a redirect, except the two that show a temporary password once (that
answer is the printable page itself, never cached).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console.kit import FormErrors, csrf_ok, csrf_refused, page_of, redirect, service_error
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.errors import InvalidInput, KalkanError, NotFound
from policy_server.people import service
from policy_server.school.service import list_rooms
from policy_server.web.i18n import N_
from policy_server.web.pages import safe_next

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)
ANYONE = scope.allow(Role.admin, Role.teacher, Role.director, Role.district)

ROLE_CHOICES = ("admin", "teacher", "director", "district")
ROLE_LABELS = {
    "admin": N_("Responsible person"),
    "teacher": N_("Teacher"),
    "class_teacher": N_("Class teacher"),
    "director": N_("Director"),
    "district": N_("District viewer"),
}
ROLE_HINTS = {
    "admin": N_("Runs the security tools; sees and changes everything (000 §4.2, §5.1)."),
    "teacher": N_("Sees the rooms and classes given below; runs lessons (000 §7.3). "
                  "Mark a class below to make them its class teacher (001 §2.7)."),
    "director": N_("Reads the whole school's summaries; no students' personal data (002 §3.1)."),
    "district": N_("Aggregates only, no personal data (002 §3.1)."),
}
NOTICES = {
    "saved": N_("The changes are saved."),
    "disabled": N_("The account is disabled: the person can no longer log in (002 §4.4)."),
    "enabled": N_("The account is enabled again."),
    "password": N_("Your password is changed."),
}


def _form_values(row: service.PersonRow | None) -> dict:
    if row is None:
        return {"username": "", "full_name": "", "role": "teacher", "language": "", "room_ids": [],
                "classes": "", "class_teacher_of": ""}
    return {"username": row.person.username, "full_name": row.person.full_name, "role": row.person.role,
            "language": row.person.language or "", "room_ids": [r.id for r in row.rooms],
            "classes": ", ".join(c.name for c, _ in row.classes),
            "class_teacher_of": ", ".join(row.class_teacher_of)}


def _render_form(page, db: Session, *, row, values: dict, errors: FormErrors, status_code: int = 200,
                 notice: str | None = None, back: str = "") -> Response:
    title = page._("Edit %(name)s", name=row.person.username) if row else page._("Add a person")
    return page.render("people/form.html", status_code=status_code, page_title=title, section="people",
                       row=row, values=values, errors=errors, rooms=list_rooms(db),
                       classes=service.list_classes(db), role_choices=ROLE_CHOICES, role_labels=ROLE_LABELS,
                       role_hints=ROLE_HINTS, notice=notice, back=_clean_back(back))


def _clean_back(back: str) -> str:
    """The list's filters to return to after an edit (Django admin's "filters kept"): only
    the list's own parameters, re-encoded."""
    kept = [(k, v[:100]) for k, v in parse_qsl(back or "") if k in ("q", "role", "state")]
    return urlencode(kept)


def _error_field(exc: KalkanError) -> str:
    code = exc.code or ""
    if code in ("person.bad_username", "person.duplicate_username"):
        return "username"
    if code.startswith("class."):
        return "classes"
    if code in ("person.unknown_role", "person.own_role"):
        return "role"
    if code == "person.unknown_room":
        return "room_ids"
    return "username"


def _room_ids(raw: list[str]) -> list[int]:
    return [int(x) for x in raw if x.isdigit()]


@router.get("/people")
def people_list(request: Request, q: str = "", role: str = "", state: str = "", done: str = "",
                viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    rows = service.people_rows(db, query=q[:100], role=role if role in ROLE_LABELS else "",
                               state=state if state in ("active", "disabled") else "")
    filters = urlencode({k: v for k, v in (("q", q), ("role", role), ("state", state)) if v})
    return page.render("people/list.html", page_title=page._("People"), section="people", rows=rows,
                       q=q, role=role, state=state, role_labels=ROLE_LABELS, back=filters,
                       notice=page._(NOTICES[done]) if done in NOTICES else None)


@router.get("/people/new")
def person_new(request: Request, viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)
               ) -> Response:
    page = page_of(request, db)
    return _render_form(page, db, row=None, values=_form_values(None), errors=FormErrors())


@router.post("/people/new")
def person_create(request: Request, csrf_token: str = Form(""), username: str = Form(""),
                  full_name: str = Form(""), role: str = Form("teacher"), language: str = Form(""),
                  room_ids: list[str] = Form([]), classes: str = Form(""), class_teacher_of: str = Form(""),
                  viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    wanted = username.strip().lower()  # A.Asanova → a.asanova; the form keeps what was typed
    values = {"username": username.strip(), "full_name": full_name, "role": role,
              "language": language, "room_ids": _room_ids(room_ids), "classes": classes,
              "class_teacher_of": class_teacher_of}
    errors = FormErrors()
    if not wanted:
        errors.add("username", page._("Enter a user name, e.g. a.asanova"))
    elif not service.USERNAME.match(wanted):  # said with the other mistakes at once
        errors.add("username", service_error(page, InvalidInput(
            f"username {values['username']!r} is not allowed: use 2–64 lowercase letters, digits, '.', '_' "
            "or '-'", code="person.bad_username", params={"username": values["username"]})))
    try:
        class_names = service.parse_class_names(classes)
        ct_names = service.parse_class_names(class_teacher_of)
    except KalkanError as exc:
        errors.add("classes", service_error(page, exc))
        class_names, ct_names = [], []
    if errors:
        return _render_form(page, db, row=None, values=values, errors=errors, status_code=422)
    try:
        person, temporary = service.create_account(
            db, actor=viewer.name, username=wanted, role=role, full_name=full_name,
            language=language or None, room_ids=values["room_ids"], class_names=class_names,
            class_teacher_of=ct_names)
    except KalkanError as exc:
        db.rollback()
        errors.add(_error_field(exc), service_error(page, exc))
        return _render_form(page, db, row=None, values=values, errors=errors, status_code=exc.status_code)
    db.commit()
    return _temporary_page(page, person, temporary, created=True)


def _temporary_page(page, person, temporary: str, *, created: bool) -> Response:
    return page.render("people/temporary.html", page_title=page._("Temporary password"), section="people",
                       shown=person, temporary=temporary, created=created,
                       server_url=str(page.request.base_url).rstrip("/"))


def _row_or_404(page, db: Session, person_id: int):
    try:
        return service.person_row(db, service.get_person(db, person_id))
    except NotFound:
        return None


@router.get("/people/{person_id}")
def person_edit(request: Request, person_id: int, done: str = "", back: str = "",
                viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    row = _row_or_404(page, db, person_id)
    if row is None:
        return page.error_page(404, page._("There is no such person."))
    return _render_form(page, db, row=row, values=_form_values(row), errors=FormErrors(),
                        notice=page._(NOTICES[done]) if done in NOTICES else None, back=back)


@router.post("/people/{person_id}")
def person_update(request: Request, person_id: int, csrf_token: str = Form(""), full_name: str = Form(""),
                  role: str = Form("teacher"), language: str = Form(""), room_ids: list[str] = Form([]),
                  classes: str = Form(""), class_teacher_of: str = Form(""), back: str = Form(""),
                  viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    row = _row_or_404(page, db, person_id)
    if row is None:
        return page.error_page(404, page._("There is no such person."))
    values = {"username": row.person.username, "full_name": full_name, "role": role, "language": language,
              "room_ids": _room_ids(room_ids), "classes": classes, "class_teacher_of": class_teacher_of}
    errors = FormErrors()
    try:
        class_names = service.parse_class_names(classes)
        ct_names = service.parse_class_names(class_teacher_of)
        service.update_account(db, actor=viewer.name, actor_id=viewer.person_id,
                               person_id=person_id, role=role, full_name=full_name,
                               language=language or None, room_ids=values["room_ids"],
                               class_names=class_names, class_teacher_of=ct_names)
    except KalkanError as exc:
        db.rollback()
        errors.add(_error_field(exc), service_error(page, exc))
        row = _row_or_404(page, db, person_id)
        return _render_form(page, db, row=row, values=values, errors=errors, status_code=exc.status_code,
                            back=back)
    db.commit()
    if back:
        return RedirectResponse("/people?" + "&".join(x for x in (_clean_back(back), "done=saved") if x),
                                status_code=303)  # back to the list, its filters kept
    return redirect(f"/people/{person_id}", done="saved")


def _set_disabled(request: Request, db: Session, viewer, person_id: int, csrf_token: str, disabled: bool):
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        service.set_disabled(db, actor=viewer.name, actor_id=viewer.person_id,
                             person_id=person_id, disabled=disabled)
    except NotFound:
        return page.error_page(404, page._("There is no such person."))
    except KalkanError as exc:
        db.rollback()
        return page.error_page(exc.status_code, service_error(page, exc))
    db.commit()
    return redirect(f"/people/{person_id}", done="disabled" if disabled else "enabled")


@router.post("/people/{person_id}/disable")
def person_disable(request: Request, person_id: int, csrf_token: str = Form(""),
                   viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    return _set_disabled(request, db, viewer, person_id, csrf_token, True)


@router.post("/people/{person_id}/enable")
def person_enable(request: Request, person_id: int, csrf_token: str = Form(""),
                  viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    return _set_disabled(request, db, viewer, person_id, csrf_token, False)


@router.post("/people/{person_id}/reset-password")
def person_reset_password(request: Request, person_id: int, csrf_token: str = Form(""),
                          viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        person, temporary = service.reset_password(db, actor=viewer.name, person_id=person_id)
    except NotFound:
        return page.error_page(404, page._("There is no such person."))
    db.commit()
    return _temporary_page(page, person, temporary, created=False)


# ----------------------------------------------------------------------------- one's own password


def _password_form(page, *, next_url: str, errors: FormErrors, status_code: int = 200) -> Response:
    return page.render("people/change_password.html", status_code=status_code,
                       page_title=page._("Change your password"), section="account", errors=errors,
                       next_url=safe_next(next_url), minimum=service.MIN_PASSWORD_LENGTH)


@router.get("/account/password")
def own_password(request: Request, next: str = "/incidents", viewer: scope.Viewer = Depends(ANYONE),
                 db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    return _password_form(page, next_url=next, errors=FormErrors())


@router.post("/account/password")
def own_password_change(request: Request, csrf_token: str = Form(""), current: str = Form(""),
                        new: str = Form(""), repeat: str = Form(""), next: str = Form("/incidents"),
                        viewer: scope.Viewer = Depends(ANYONE), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        service.change_own_password(db, person=viewer.person, current=current, new=new, repeat=repeat)
    except KalkanError as exc:
        db.rollback()
        errors = FormErrors()
        field = {"person.wrong_current_password": "current", "person.passwords_differ": "repeat"}.get(
            exc.code or "", "new")
        errors.add(field, service_error(page, exc))
        return _password_form(page, next_url=next, errors=errors, status_code=422)
    db.commit()
    return redirect(safe_next(next))


STATIC_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "web" / "static"


@router.get("/static/console.css", dependencies=[Depends(scope.public)])
def console_stylesheet() -> Response:
    from fastapi.responses import FileResponse

    return FileResponse(STATIC_DIR / "console.css", media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})
