"""ISUO pages: the register, a person's page, the printable annexes, imports, the access log,
the settings (address plan, working time, holidays, consents) and the termly review.

Scope: the responsible person (admin) edits everything; the director reads the register and
the review and decides and signs the review, but sees no students' data (the consent names,
the access log: 002 §3.1).  Every change is a POST form with the CSRF token answered with a
redirect; bad input is shown as an error summary naming each field and its fix.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console import kit
from policy_server.db.models import Incident, Role
from policy_server.db.session import get_db
from policy_server.errors import NotFound
from policy_server.isuo import imports, service
from policy_server.isuo.findings import ISUO_RULES
from policy_server.isuo.models import IsuoImport, IsuoLogin, IsuoRecord, IsuoRole, IsuoUser
from policy_server.isuo.rules import SCHOOL_TZ
from policy_server.web import presenters, queries
from policy_server.web.i18n import N_
from policy_server.web.pages import Page

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
LOG_PER_PAGE = 50
ROLE_NAMES = {
    "district": N_("District education office staff"),
    "director": N_("Director"),
    "specialist": N_("ISUO responsible specialist"),
    "teacher": N_("Teacher"),
}
STATE_NAMES = {
    "signed": N_("Obligation signed"),
    "missing": N_("No signed obligation"),
    "blocked": N_("Access blocked"),
    "left": N_("Left the school"),
}
CONSENT_KIND_NAMES = {"staff": N_("Staff"), "student": N_("Student under 16"), "parent": N_("Parent")}
DECISION_NAMES = {"confirm": N_("Confirmed"), "block": N_("Asked to block")}
WEEKDAYS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
PROBLEM_NAMES = {
    "scan_overdue": N_("weekly full scan overdue"),
    "integrity_failing": N_("integrity check failing"),
}
NOTICES = {
    "saved": N_("Saved."),
    "obligation": N_("The signed obligation is recorded."),
    "blocked": N_("The access is recorded as blocked."),
    "left": N_("The person is recorded as having left."),
    "imported": N_("Imported."),
    "decided": N_("Your decision is recorded."),
    "signed": N_("The review is signed."),
    "started": N_("The review is open."),
}
FORM_FIELDS = {
    "full_name": N_("Full name"),
    "position": N_("Position"),
    "isuo_role": N_("ISUO role"),
    "logins": N_("ISUO login(s)"),
    "order_date": N_("Order date"),
    "person_username": N_("Kalkan account"),
    "signed_on": N_("Signed on"),
    "instructed_by": N_("Instructed by"),
    "scan": N_("Scan or personal file"),
    "blocked_on": N_("Blocked on"),
    "blocked_reason": N_("Reason"),
    "left_on": N_("Left on"),
    "subject_name": N_("Whose consent"),
    "subject_kind": N_("Who"),
    "given_on": N_("Given on"),
    "withdrawn_on": N_("Withdrawn on"),
    "ip": N_("IP address"),
    "seat": N_("Seat"),
    "start": N_("Working hours"),
    "weekdays": N_("Working days"),
    "day": N_("Holiday"),
    "due_on": N_("Next review due"),
    "term": N_("Term"),
    "decision": N_("Decision"),
    "signer_name": N_("Your full name"),
    "next_due_on": N_("Next review due"),
    "file": N_("File"),
}

EDITORS = (Role.admin,)
READERS = (Role.admin, Role.director)


def page_access(*roles: Role):
    """Route scope for pages: the `Viewer`, or the error itself (turned into the login redirect
    or the error page by `_gate`) instead of a JSON answer."""
    inner = scope.allow(*roles)

    def dependency(request: Request, db: Session = Depends(get_db)):
        try:
            return inner(request, db)
        except (scope.NotLoggedIn, scope.NotAllowed) as exc:
            return exc

    dependency.kalkan_scope = inner.kalkan_scope  # type: ignore[attr-defined]
    return dependency


def _gate(request: Request, db: Session, viewer) -> tuple[Page, Response | None]:
    from policy_server.people import auth

    person = viewer.person if isinstance(viewer, scope.Viewer) else auth.optional_person(request, db)
    page = Page.for_request(request, person, default_language=queries.school_language(db))
    if isinstance(viewer, scope.NotLoggedIn):
        return page, page.login_redirect()
    if isinstance(viewer, scope.NotAllowed):
        return page, page.error_page(
            403,
            page._("Your role may not see or do this. Ask the school's responsible person if you need it."),
        )
    return page, None


def _done(url: str, notice: str) -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}done={notice}", status_code=303)


def _errors(page: Page, problems: dict[str, str], params: dict | None = None) -> list[dict[str, str]]:
    return [
        {"field": f, "label": page._(FORM_FIELDS.get(f, f)), "message": page._(m, **(params or {}))}
        for f, m in problems.items()
    ]


def _gate_form(request: Request, db: Session, viewer, csrf_token: str) -> tuple[Page, Response | None]:
    """`_gate` for a POST form: also refuses a missing or stale CSRF token."""
    page, refused = _gate(request, db, viewer)
    if refused is None and not kit.csrf_ok(page, csrf_token):
        refused = kit.csrf_refused(page)
    return page, refused


def _no_person(page: Page) -> Response:
    return page.error_page(404, page._("No such person in the ISUO register."))


def _submit(
    db: Session,
    page: Page,
    change: Callable[[], Any],
    *,
    again: Callable[..., Response],
    done: str | Callable[[Any], str],
    notice: str,
) -> Response:
    """One form's change in one transaction, the same for every ISUO form.

    `change()` (a service call) committed: a redirect to `done` (a URL, or a function of what
    `change` returned) with the notice.  The service's `FormInvalid`: rolled back and the page
    shown `again(errors=..., status_code=422)` with the person's input.  `NotFound` (the
    object went away): rolled back, a 404 page."""
    try:
        result = change()
        db.commit()
    except service.FormInvalid as exc:
        db.rollback()
        return again(errors=_errors(page, exc.problems), status_code=422)
    except NotFound:
        db.rollback()
        return page.error_page(404, page._("Not found"))
    return _done(done(result) if callable(done) else done, notice)


def _common(page: Page, request: Request, viewer: scope.Viewer) -> dict:
    done = request.query_params.get("done")
    return {
        "notice": page._(NOTICES[done]) if done in NOTICES else None,
        "section": "isuo-register",
        "may_edit": viewer.role == Role.admin,
        "is_director": viewer.role == Role.director,
        "role_names": ROLE_NAMES,
        "state_names": STATE_NAMES,
        "isuo_nav": True,
    }


def _user_row(user: IsuoUser, last_access: datetime | None, findings: int) -> dict:
    return {
        "user": user,
        "state": service.obligation_state(user),
        "logins": [lg.login for lg in user.logins],
        "last_access": last_access,
        "findings": findings,
    }


def _last_access(db: Session) -> dict[int, datetime]:
    rows = db.execute(
        select(IsuoLogin.user_id, func.max(IsuoRecord.at))
        .join(IsuoRecord, IsuoRecord.login == IsuoLogin.login)
        .group_by(IsuoLogin.user_id)
    ).all()
    return dict(rows)


def _findings_by_user(db: Session) -> dict[int, int]:
    counts: dict[int, int] = {}
    logins = dict(db.execute(select(IsuoLogin.login, IsuoLogin.user_id)).all())
    for params in db.scalars(select(Incident.params).where(Incident.rule.in_(ISUO_RULES))):
        user_id = (params or {}).get("user_id") or logins.get((params or {}).get("login"))
        if user_id:
            counts[user_id] = counts.get(user_id, 0) + 1
    return counts


# ----------------------------------------------------------------------------- static


def _stylesheet(name: str) -> FileResponse:
    return FileResponse(
        STATIC / name, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("/isuo/print.css", dependencies=[Depends(scope.public)])
def print_css() -> FileResponse:
    """The annex forms' print sheet (A4, no site chrome)."""
    return _stylesheet("print.css")


@router.get("/isuo/isuo.css", dependencies=[Depends(scope.public)])
def isuo_css() -> FileResponse:
    """The ISUO pages' small additions to kalkan.css."""
    return _stylesheet("isuo.css")


# ----------------------------------------------------------------------------- register


@router.get("/isuo/register")
def register(
    request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*READERS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    last, findings = _last_access(db), _findings_by_user(db)
    rows = [_user_row(u, last.get(u.id), findings.get(u.id, 0)) for u in service.list_users(db)]
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in STATE_NAMES}
    return page.render(
        "isuo/register.html",
        page_title=page._("ISUO register"),
        rows=rows,
        counts=counts,
        consent_counts=service.consent_counts(db),
        consent_kind_names=CONSENT_KIND_NAMES,
        block_requests=service.block_requests(db),
        **_common(page, request, viewer),
    )


def _person_form(
    page: Page,
    request: Request,
    viewer,
    *,
    user: IsuoUser | None,
    values: dict,
    errors: list | None = None,
    status_code: int = 200,
) -> Response:
    return page.render(
        "isuo/person_form.html",
        status_code=status_code,
        page_title=page._("Add a person to the ISUO register")
        if user is None
        else page._("Change %(name)s", name=user.full_name),
        user=user,
        values=values,
        errors=errors or [],
        roles=list(IsuoRole),
        **_common(page, request, viewer),
    )


@router.get("/isuo/register/new")
def new_person(
    request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*EDITORS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    return _person_form(page, request, viewer, user=None, values={})


def person_fields(
    full_name: str = Form(""),
    position: str = Form(""),
    isuo_role: str = Form(""),
    logins: str = Form(""),
    order_number: str = Form(""),
    order_date: str = Form(""),
    person_username: str = Form(""),
) -> dict[str, str]:
    """The register form's fields (new person and change), as typed."""
    return dict(
        full_name=full_name,
        position=position,
        isuo_role=isuo_role,
        logins=logins,
        order_number=order_number,
        order_date=order_date,
        person_username=person_username,
    )


@router.post("/isuo/register/new")
def create_person(
    request: Request,
    csrf_token: str = Form(""),
    values: dict[str, str] = Depends(person_fields),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    return _submit(
        db,
        page,
        lambda: service.save_user(db, viewer=viewer, **values),
        again=partial(_person_form, page, request, viewer, user=None, values=values),
        done=lambda user: f"/isuo/people/{user.id}",
        notice="saved",
    )


def _load_user(db: Session, user_id: int) -> IsuoUser | None:
    try:
        return service.get_user(db, user_id)
    except NotFound:
        return None


@router.get("/isuo/people/{user_id}/edit")
def edit_person(
    user_id: int, request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*EDITORS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    user = _load_user(db, user_id)
    if user is None:
        return page.error_page(404, page._("No such person in the ISUO register."))
    from policy_server.db.models import Person

    account = db.get(Person, user.person_id) if user.person_id else None
    values = dict(
        full_name=user.full_name,
        position=user.position,
        isuo_role=user.isuo_role,
        logins=", ".join(lg.login for lg in user.logins),
        order_number=user.order_number,
        order_date=user.order_date.isoformat() if user.order_date else "",
        person_username=account.username if account else "",
    )
    return _person_form(page, request, viewer, user=user, values=values)


@router.post("/isuo/people/{user_id}/edit")
def change_person(
    user_id: int,
    request: Request,
    csrf_token: str = Form(""),
    values: dict[str, str] = Depends(person_fields),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    user = _load_user(db, user_id)
    if user is None:
        return _no_person(page)
    return _submit(
        db,
        page,
        lambda: service.save_user(db, viewer=viewer, user_id=user_id, **values),
        again=partial(_person_form, page, request, viewer, user=user, values=values),
        done=f"/isuo/people/{user_id}",
        notice="saved",
    )


def _person_page(
    page: Page,
    request: Request,
    db: Session,
    viewer,
    user: IsuoUser,
    *,
    errors: list | None = None,
    values: dict | None = None,
    status_code: int = 200,
) -> Response:
    logins = [lg.login for lg in user.logins]
    accesses = []
    if viewer.role == Role.admin and logins:
        accesses = db.execute(
            select(
                IsuoRecord.at,
                IsuoRecord.login,
                IsuoRecord.action,
                IsuoRecord.record_type,
                IsuoRecord.seat,
                IsuoRecord.ip,
            )
            .where(IsuoRecord.login.in_(logins))
            .order_by(IsuoRecord.at.desc())
            .limit(20)
        ).all()
    incidents = [
        i
        for i in db.scalars(
            select(Incident)
            .where(Incident.rule.in_(ISUO_RULES))
            .order_by(Incident.first_seen_at.desc())
            .limit(500)
        )
        if (i.params or {}).get("user_id") == user.id or (i.params or {}).get("login") in logins
    ][:20]
    settings = request.app.state.settings
    return page.render(
        "isuo/person.html",
        status_code=status_code,
        page_title=user.full_name,
        user=user,
        logins=logins,
        state=service.obligation_state(user),
        accesses=accesses,
        incidents=[
            {
                "id": i.id,
                "title": presenters.incident_title(page.language, i.rule, i.params, i.title),
                "clauses": i.clauses,
                "at": i.first_seen_at,
                "status": i.status,
            }
            for i in incidents
        ],
        scan_ok=service.verify_scan(settings.state_dir, user),
        errors=errors or [],
        values=values or {},
        today=date.today().isoformat(),
        **_common(page, request, viewer),
    )


@router.get("/isuo/people/{user_id}")
def person(
    user_id: int, request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*READERS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    user = _load_user(db, user_id)
    if user is None:
        return page.error_page(404, page._("No such person in the ISUO register."))
    return _person_page(page, request, db, viewer, user)


def _person_change(
    request: Request,
    db: Session,
    viewer,
    csrf_token: str,
    user_id: int,
    change: Callable[[], Any],
    *,
    values: dict[str, str],
    notice: str,
) -> Response:
    """A form on a person's page (obligation, block, left): refused without the role or the
    CSRF token, a 404 for an unknown person, else `_submit` back to the person's page."""
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    user = _load_user(db, user_id)
    if user is None:
        return _no_person(page)
    return _submit(
        db,
        page,
        change,
        again=partial(_person_page, page, request, db, viewer, user, values=values),
        done=f"/isuo/people/{user_id}",
        notice=notice,
    )


@router.post("/isuo/people/{user_id}/obligation")
async def obligation(
    user_id: int,
    request: Request,
    csrf_token: str = Form(""),
    signed_on: str = Form(""),
    instructed_by: str = Form(""),
    file_number: str = Form(""),
    scan: UploadFile | None = File(None),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    data = await scan.read(service.MAX_SCAN_BYTES + 1) if scan is not None else b""
    return _person_change(
        request,
        db,
        viewer,
        csrf_token,
        user_id,
        lambda: service.record_obligation(
            db,
            viewer=viewer,
            user_id=user_id,
            signed_on=signed_on,
            instructed_by=instructed_by,
            scan=data or None,
            scan_name=(scan.filename or "") if scan else "",
            file_number=file_number,
            state_dir=request.app.state.settings.state_dir,
        ),
        values={"signed_on": signed_on, "instructed_by": instructed_by, "file_number": file_number},
        notice="obligation",
    )


@router.post("/isuo/people/{user_id}/block")
def block(
    user_id: int,
    request: Request,
    csrf_token: str = Form(""),
    blocked_on: str = Form(""),
    blocked_reason: str = Form(""),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    return _person_change(
        request,
        db,
        viewer,
        csrf_token,
        user_id,
        lambda: service.block_user(
            db, viewer=viewer, user_id=user_id, blocked_on=blocked_on, reason=blocked_reason
        ),
        values={"blocked_on": blocked_on, "blocked_reason": blocked_reason},
        notice="blocked",
    )


@router.post("/isuo/people/{user_id}/left")
def left(
    user_id: int,
    request: Request,
    csrf_token: str = Form(""),
    left_on: str = Form(""),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    return _person_change(
        request,
        db,
        viewer,
        csrf_token,
        user_id,
        lambda: service.mark_left(db, viewer=viewer, user_id=user_id, left_on=left_on),
        values={"left_on": left_on},
        notice="left",
    )


@router.get("/isuo/people/{user_id}/scan")
def scan_file(
    user_id: int, request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*EDITORS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    user = _load_user(db, user_id)
    path = service.scan_path(request.app.state.settings.state_dir, user) if user else None
    if path is None:
        return page.error_page(404, page._("No scan is kept for this person."))
    media = {"pdf": "application/pdf", "jpg": "image/jpeg", "png": "image/png"}[path.suffix[1:]]
    return FileResponse(
        path,
        media_type=media,
        filename=f"obligation-{user.id}.{path.suffix[1:]}",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


ANNEXES = {"1.1": "isuo/annex_1_1.html", "1.2": "isuo/annex_1_2.html"}


@router.get("/isuo/people/{user_id}/annex/{annex}/{form_language}")
def annex(
    user_id: int,
    annex: str,
    form_language: str,
    request: Request,
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*READERS)),
) -> Response:
    """The annex 1.1 obligation or 1.2 consent form, in Russian or Kyrgyz, filled in, to print."""
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    user = _load_user(db, user_id)
    if user is None or annex not in ANNEXES or form_language not in ("ru", "ky"):
        return page.error_page(404, page._("No such form. The forms are annex 1.1 and 1.2, in ru or ky."))
    from policy_server.school.service import get_school

    school = get_school(db)
    return page.render(
        ANNEXES[annex],
        page_title=f"{annex} · {user.full_name}",
        user=user,
        form_language=form_language,
        school_name=school.name if school else "",
        year=date.today().year,
    )


# ----------------------------------------------------------------------------- imports


def _imports_page(
    page: Page,
    request: Request,
    db: Session,
    viewer,
    *,
    errors: list | None = None,
    rejected: imports.ImportRejected | None = None,
    values: dict | None = None,
    status_code: int = 200,
) -> Response:
    sources = imports.list_sources(db)
    chosen = (
        request.query_params.get("source")
        or (values or {}).get("source_name")
        or (sources[0].name if sources else "")
    )
    source = next((s for s in sources if s.name == chosen), None)
    mapping = (values or {}).get("mapping") or (source.mapping if source else {})
    history = db.execute(select(IsuoImport).order_by(IsuoImport.id.desc()).limit(20)).scalars().all()
    names = {s.id: s.name for s in sources}
    problems = []
    if rejected is not None:
        problems = [
            {"line": p.line, "problem": page._(p.problem, **p.params), "fix": page._(p.fix)}
            for p in rejected.problems
        ]
    return page.render(
        "isuo/imports.html",
        status_code=status_code,
        page_title=page._("Import ISUO access records"),
        sources=sources,
        source_name=chosen,
        mapping=mapping,
        fields=imports.FIELDS,
        field_names=imports.FIELD_NAMES,
        required=imports.REQUIRED,
        history=history,
        source_names=names,
        errors=errors or [],
        problems=problems,
        total_bad=rejected.total_bad if rejected else 0,
        result=(values or {}).get("result"),
        **_common(page, request, viewer),
    )


@router.get("/isuo/imports")
def imports_page(
    request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*EDITORS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    result = None
    last = request.query_params.get("import")
    if last and last.isdigit():
        result = db.get(IsuoImport, int(last))
    return _imports_page(page, request, db, viewer, values={"result": result})


@router.post("/isuo/imports")
async def import_upload(
    request: Request,
    csrf_token: str = Form(""),
    source_name: str = Form(""),
    map_login: str = Form(""),
    map_time: str = Form(""),
    map_action: str = Form(""),
    map_ip: str = Form(""),
    map_record_type: str = Form(""),
    file: UploadFile | None = File(None),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    mapping = {
        "login": map_login,
        "time": map_time,
        "action": map_action,
        "ip": map_ip,
        "record_type": map_record_type,
    }
    values = {"source_name": source_name, "mapping": mapping}
    data = await file.read(imports.MAX_FILE_BYTES + 1) if file is not None else b""
    if not data:
        return _imports_page(
            page,
            request,
            db,
            viewer,
            values=values,
            status_code=422,
            errors=_errors(page, {"file": N_("Choose the exported CSV or XLSX file.")}),
        )
    try:
        source = imports.save_source(db, name=source_name, mapping=mapping, actor=viewer.name)
        result = imports.import_file(
            db, source=source, data=data, file_name=file.filename or "upload", actor=viewer.name
        )
        db.commit()
    except imports.ImportRejected as exc:
        db.rollback()
        return _imports_page(page, request, db, viewer, rejected=exc, values=values, status_code=422)
    return RedirectResponse(
        f"/isuo/imports?{urlencode({'source': source_name, 'import': result.import_id})}&done=imported",
        status_code=303,
    )


# ----------------------------------------------------------------------------- access log


@router.get("/isuo/log")
def access_log(
    request: Request,
    person: str = "",
    seat: str = "",
    day: str = "",
    page_number: str = "1",
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*EDITORS)),
) -> Response:
    """Imported ISUO records: who, when, from where, what kind (never any ISUO content)."""
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    query = (
        select(
            IsuoRecord.at,
            IsuoRecord.login,
            IsuoRecord.action,
            IsuoRecord.record_type,
            IsuoRecord.seat,
            IsuoRecord.ip,
            IsuoRecord.proxy_access_id,
            IsuoUser.id,
            IsuoUser.full_name,
        )
        .outerjoin(IsuoLogin, IsuoLogin.login == IsuoRecord.login)
        .outerjoin(IsuoUser, IsuoUser.id == IsuoLogin.user_id)
    )
    count = (
        select(func.count()).select_from(IsuoRecord).outerjoin(IsuoLogin, IsuoLogin.login == IsuoRecord.login)
    )
    errors = []
    if person.isdigit():
        query, count = (
            query.where(IsuoLogin.user_id == int(person)),
            count.where(IsuoLogin.user_id == int(person)),
        )
    if seat.strip():
        query, count = (
            query.where(IsuoRecord.seat == seat.strip()),
            count.where(IsuoRecord.seat == seat.strip()),
        )
    if day.strip():
        try:
            start = datetime.combine(
                date.fromisoformat(day.strip()), datetime.min.time(), SCHOOL_TZ
            ).astimezone(UTC)
            span = (IsuoRecord.at >= start, IsuoRecord.at < start + timedelta(days=1))
            query, count = query.where(*span), count.where(*span)
        except ValueError:
            errors = _errors(page, {"day": N_("Enter a date as year-month-day, for example 2026-09-01.")})
    total = db.scalar(count) or 0
    pagination = presenters.Pagination(
        page=max(1, int(page_number)) if page_number.isdigit() else 1, per_page=LOG_PER_PAGE, total=total
    )
    rows = db.execute(
        query.order_by(IsuoRecord.at.desc(), IsuoRecord.id.desc())
        .limit(LOG_PER_PAGE)
        .offset(pagination.offset)
    ).all()
    base = urlencode({k: v for k, v in {"person": person, "seat": seat, "day": day}.items() if v})
    return page.render(
        "isuo/log.html",
        page_title=page._("ISUO access records"),
        rows=rows,
        pagination=pagination,
        people=service.list_users(db),
        person_filter=person,
        seat=seat,
        day=day,
        base_query=base,
        errors=errors,
        **_common(page, request, viewer),
    )


# ----------------------------------------------------------------------------- settings, consents


def _settings_page(
    page: Page, request: Request, db: Session, viewer, *, errors: list | None = None, status_code: int = 200
) -> Response:
    working = service.working_time(db)
    return page.render(
        "isuo/settings.html",
        status_code=status_code,
        page_title=page._("ISUO settings"),
        plan=service.address_plan(db),
        working=working,
        holidays=service.holidays(db),
        weekdays=WEEKDAYS,
        due_on=service.review_due_on(db),
        consents=service.list_consents(db, viewer=viewer),
        consent_counts=service.consent_counts(db),
        consent_kind_names=CONSENT_KIND_NAMES,
        kinds=service.CONSENT_KINDS,
        errors=errors or [],
        today=date.today().isoformat(),
        **_common(page, request, viewer),
    )


@router.get("/isuo/settings")
def settings_page(
    request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*EDITORS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    return _settings_page(page, request, db, viewer)


@router.post("/isuo/settings/{what}")
async def settings_change(
    what: str, request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*EDITORS))
) -> Response:
    form = await request.form()
    page, refused = _gate_form(request, db, viewer, str(form.get("csrf_token", "")))
    if refused:
        return refused

    def f(name: str) -> str:
        return str(form.get(name, ""))

    actions = {
        "address": lambda: service.set_address(db, viewer=viewer, ip=f("ip"), seat=f("seat"), note=f("note")),
        "hours": lambda: service.set_working_time(
            db,
            viewer=viewer,
            start=f("start"),
            end=f("end"),
            weekdays=[str(v) for v in form.getlist("weekdays")],
        ),
        "holiday": lambda: service.add_holiday(db, viewer=viewer, day=f("day"), name=f("name")),
        "due": lambda: service.set_review_due_on(db, viewer=viewer, due_on=f("due_on")),
        "consent": lambda: service.add_consent(
            db,
            viewer=viewer,
            subject_name=f("subject_name"),
            subject_kind=f("subject_kind"),
            given_on=f("given_on"),
            scope=f("scope"),
        ),
        "withdraw": lambda: service.withdraw_consent(
            db, viewer=viewer, consent_id=int(f("consent_id") or 0), withdrawn_on=f("withdrawn_on")
        ),
    }
    if what not in actions:
        return page.error_page(404, page._("Not found"))
    return _submit(
        db,
        page,
        actions[what],
        again=partial(_settings_page, page, request, db, viewer),
        done="/isuo/settings",
        notice="saved",
    )


# ----------------------------------------------------------------------------- termly review


def _review_page(
    page: Page, request: Request, db: Session, viewer, *, errors: list | None = None, status_code: int = 200
) -> Response:
    review = service.open_review(db)
    last, findings = _last_access(db), _findings_by_user(db)
    rows = []
    if review is not None:
        for item in review.items:
            rows.append(
                {"item": item, **_user_row(item.user, last.get(item.user_id), findings.get(item.user_id, 0))}
            )
    return page.render(
        "isuo/review.html",
        status_code=status_code,
        page_title=page._("Termly ISUO access review"),
        review=review,
        rows=rows,
        last_signed=service.last_signed_review(db),
        due_on=service.review_due_on(db),
        decision_names=DECISION_NAMES,
        errors=errors or [],
        today=date.today().isoformat(),
        next_due=(date.today() + timedelta(days=120)).isoformat(),
        **_common(page, request, viewer),
    )


@router.get("/isuo/review")
def review_page(
    request: Request, db: Session = Depends(get_db), viewer=Depends(page_access(*READERS))
) -> Response:
    page, refused = _gate(request, db, viewer)
    if refused:
        return refused
    return _review_page(page, request, db, viewer)


@router.post("/isuo/review")
def review_start(
    request: Request,
    csrf_token: str = Form(""),
    term: str = Form(""),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(*READERS)),
) -> Response:
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    return _submit(
        db,
        page,
        lambda: service.start_review(db, viewer=viewer, term=term),
        again=partial(_review_page, page, request, db, viewer),
        done="/isuo/review",
        notice="started",
    )


@router.post("/isuo/review/{review_id}/decide")
def review_decide(
    review_id: int,
    request: Request,
    csrf_token: str = Form(""),
    user_id: int = Form(0),
    decision: str = Form(""),
    note: str = Form(""),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(Role.director)),
) -> Response:
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    return _submit(
        db,
        page,
        lambda: service.decide(
            db, viewer=viewer, review_id=review_id, user_id=user_id, decision=decision, note=note
        ),
        again=partial(_review_page, page, request, db, viewer),
        done="/isuo/review",
        notice="decided",
    )


@router.post("/isuo/review/{review_id}/sign")
def review_sign(
    review_id: int,
    request: Request,
    csrf_token: str = Form(""),
    signer_name: str = Form(""),
    signed_on: str = Form(""),
    next_due_on: str = Form(""),
    db: Session = Depends(get_db),
    viewer=Depends(page_access(Role.director)),
) -> Response:
    page, refused = _gate_form(request, db, viewer, csrf_token)
    if refused:
        return refused
    return _submit(
        db,
        page,
        lambda: service.sign_review(
            db,
            viewer=viewer,
            review_id=review_id,
            signer_name=signer_name,
            signed_on=signed_on,
            next_due_on=next_due_on,
        ),
        again=partial(_review_page, page, request, db, viewer),
        done="/isuo/review",
        notice="signed",
    )
