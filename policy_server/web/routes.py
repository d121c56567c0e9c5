"""The web console's pages: thin handlers over the services, the queries and the presenters.

Every page works without JavaScript; every change is a POST form carrying the
login session's CSRF token and answered with a redirect (so a reload never
repeats it).  Roles (002 §4, 004 §3): the responsible person (admin) sees and
acts on everything; the director reads (no OS user names, 002 §3.1); a teacher
reads the incidents and workstations of the rooms they teach in (000 §7.3).
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.agents import service as agents
from policy_server.db.models import Person, Role
from policy_server.db.session import get_db
from policy_server.errors import KalkanError, NotFound
from policy_server.fleet.pages import NOTICES as DECISION_NOTICES
from policy_server.incidents import details
from policy_server.incidents import retention as incident_accounts
from policy_server.incidents import service as incidents
from policy_server.people import auth
from policy_server.scope import MAX_ID, Viewer
from policy_server.security.throttle import TOO_MANY_PAGE, attempt_login, client_address
from policy_server.web import presenters, queries
from policy_server.web.i18n import N_
from policy_server.web.pages import LOGIN_CSRF_COOKIE, Page, new_login_csrf, safe_next

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent / "static"
INCIDENTS_PER_PAGE = 25
ISUO_PER_PAGE = 50
EVENTS_SHOWN = 100

NOTICES = {
    "acknowledged": N_("The incident is acknowledged."),
    "assigned": N_("The incident is assigned."),
    "resolved": N_("The incident is resolved."),
}


def _page(request: Request, db: Session, viewer: Viewer | None = None) -> Page:
    person = viewer.person if viewer is not None else auth.optional_person(request, db)
    return Page.for_request(request, person, default_language=queries.school_language(db))


# Route scopes of the pages (docs/security.md "Roles and scopes").
READERS = scope.allow(Role.admin, Role.teacher, Role.director)  # incidents, workstations
ADMINS = scope.allow(Role.admin)  # acting on incidents, the ISUO access log
IncidentId = PathParam(ge=1, le=MAX_ID)


def scope_error_page(request: Request, exc: Exception) -> Response:
    """A page's answer to `scope.NotLoggedIn` (the login redirect) and `scope.NotAllowed` (the
    error page in the reader's language); the JSON API answers 401/403 JSON (app.py)."""
    with request.app.state.sessionmaker() as db:
        person = None if isinstance(exc, scope.NotLoggedIn) else auth.optional_person(request, db)
        page = Page.for_request(request, person, default_language=queries.school_language(db))
        if isinstance(exc, scope.NotLoggedIn) or page.person is None:
            return page.login_redirect()
        return _not_allowed(page)


def _form_csrf_ok(page: Page, token: str | None) -> bool:
    return bool(page.csrf_token and token and hmac.compare_digest(page.csrf_token, token))


def _csrf_refused(page: Page) -> Response:
    return page.error_page(403, page._("The form's security token is missing or out of date. "
                                       "Go back, reload the page and try again."))


def _not_allowed(page: Page) -> Response:
    return page.error_page(403, page._("Your role may not see or do this. "
                                       "Ask the school's responsible person if you need it."))


def _where(ws, seat: str | None) -> dict[str, str]:
    """{'place': 'Lab 1 / 07', 'host': 'pc-07'} from the workstation and the seat the event named."""
    parts = []
    if ws is not None and ws.room is not None:
        parts.append(ws.room.name)
    seat = seat or (ws.seat if ws is not None else None)
    if seat:
        parts.append(seat)
    return {"place": " / ".join(parts), "host": ws.hostname if ws is not None else ""}


# ----------------------------------------------------------------------------- static, home


@router.get("/static/kalkan.css", dependencies=[Depends(scope.public)])
def stylesheet() -> FileResponse:
    return FileResponse(STATIC_DIR / "kalkan.css", media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})


@router.get("/", dependencies=[Depends(scope.public)])
def home(request: Request, db: Session = Depends(get_db)) -> Response:
    page = _page(request, db)
    # The director lands on the weekly summary, the district on the district console (issue 15).
    landing = {"director": "/summaries", "district": "/district"}.get(page.person.role if page.person else "")
    return RedirectResponse(landing or ("/incidents" if page.person else "/login"), status_code=303)


# ----------------------------------------------------------------------------- login, logout


def _login_form(page: Page, *, username: str = "", next_url: str = "/incidents", error: str | None = None,
                status_code: int = 200) -> Response:
    token = new_login_csrf()
    response = page.render("login.html", status_code=status_code, page_title=page._("Log in"),
                           csrf_token=token, username=username, next_url=safe_next(next_url), error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=bool(getattr(page.request.app.state.settings, "tls", False)))
    return response


@router.get("/login", dependencies=[Depends(scope.public)])
def login_page(request: Request, next: str = "/incidents", db: Session = Depends(get_db)) -> Response:
    page = _page(request, db)
    if page.person:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_form(page, next_url=next)


@router.post("/login", dependencies=[Depends(scope.public)])
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form("/incidents"),
    db: Session = Depends(get_db),
) -> Response:
    page = Page.for_request(request, None, default_language=queries.school_language(db))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf_token or not hmac.compare_digest(expected, csrf_token):
        return _login_form(page, username=username, next_url=next, status_code=403,
                           error=page._("The login form was out of date. Please try again."))
    username = username.strip().lower()
    outcome = attempt_login(db, request.app.state.login_throttle, username=username, password=password,
                            address=client_address(request), via="page")
    if outcome.refusal is not None:
        message = page._(TOO_MANY_PAGE, minutes=outcome.refusal.minutes)
        response = _login_form(page, username=username, next_url=next, error=message, status_code=429)
        response.headers["Retry-After"] = str(outcome.refusal.retry_after)
        return response
    person = outcome.person
    if person is None:
        if outcome.disabled:
            message = page._("This account is disabled (002 §4.4). Ask the school's responsible person.")
        else:
            message = page._("Wrong user name or password. Check the keyboard language and Caps Lock.")
        return _login_form(page, username=username, next_url=next, error=message, status_code=401)
    cookie_value, _login = auth.create_login_session(
        db, person, hours=request.app.state.settings.login_session_hours)
    db.commit()
    if next in ("", "/", "/incidents") and person.role in ("director", "district"):
        next = "/summaries" if person.role == "director" else "/district"  # shown on login (issue 15)
    target = safe_next(next)
    if person.must_change_password:  # a temporary password (issue 11): choose one's own first
        target = "/account/password?" + urlencode({"next": target})
    response = RedirectResponse(target, status_code=303)
    auth.set_session_cookie(response, request, cookie_value)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", dependencies=[Depends(scope.public)])  # logged out already: to the login
def logout(request: Request, csrf_token: str = Form(""), db: Session = Depends(get_db)) -> Response:
    page = _page(request, db)
    if page.person is None:
        return RedirectResponse("/login", status_code=303)
    if not _form_csrf_ok(page, csrf_token):
        return _csrf_refused(page)
    auth.end_login_session(db, request)
    db.commit()
    response = RedirectResponse("/login", status_code=303)
    auth.clear_session_cookie(response)
    return response


# ----------------------------------------------------------------------------- incidents


@router.get("/incidents")
def incident_list(
    request: Request,
    status: str | None = Query(None, max_length=32),
    severity: str | None = Query(None, max_length=32),
    viewer: Viewer = Depends(READERS),
    db: Session = Depends(get_db),
) -> Response:
    page = _page(request, db, viewer)
    filt = presenters.IncidentFilter.from_query(status, severity, request.query_params.get("page"))
    total = incidents.count_incidents(db, viewer=viewer, status=filt.status, severity=filt.severity)
    pagination = presenters.Pagination(page=filt.page, per_page=INCIDENTS_PER_PAGE, total=total)
    found = incidents.list_incidents(db, viewer=viewer, status=filt.status, severity=filt.severity,
                                     limit=INCIDENTS_PER_PAGE, offset=pagination.offset)
    params = incidents.reader_params(db, found, viewer=viewer)
    stations = queries.workstations_by_id(db, {i.agent_id for i in found if i.agent_id})
    rows = [
        {
            "id": i.id,
            "title": presenters.incident_title(page.language, i.rule, params[i.id],
                                               incidents.rule_title(i.rule, i.title)),
            "severity": i.severity,
            "status": i.status,
            "where": _where(stations.get(i.agent_id), i.seat),
            # (past the retention days the account is gone: the list says so, as the page does)
            "os_user": (i.os_user or incident_accounts.user_removed_text(page.language, i))
            if viewer.sees_personal_data else None,
            "last_seen_at": i.last_seen_at,
            "event_count": i.event_count,
            "clauses": i.clauses or [],
        }
        for i in found
    ]
    room_scope = None
    if viewer.room_ids is not None:
        room_scope = ", ".join(queries.room_names(db, viewer.room_ids)) or "—"
    return page.render(
        "incidents.html", page_title=page._("Incidents"), section="incidents", rows=rows, filt=filt,
        pagination=pagination, counts=incidents.status_counts(db, viewer=viewer),
        statuses=presenters.STATUSES, severities=presenters.SEVERITIES,
        status_names=presenters.STATUS_NAMES, severity_names=presenters.SEVERITY_NAMES,
        room_scope=room_scope,
    )


def _load_visible_incident(db: Session, viewer: Viewer, incident_id: int):
    """The incident if this person may see it; None when missing or outside their scope."""
    try:
        return incidents.get_incident(db, incident_id, viewer=viewer)
    except NotFound:
        return None


def _timeline_rows(page: Page, incident) -> list[dict]:
    rows = []
    for entry in incident.timeline:
        detail = entry.detail or {}
        # What was decided or who was told, in the words the service stored.
        # (a resolution's reason is free text that may name a student: not for the director)
        reason = detail.get("reason") if page.perms.see_personal_data else None
        note = reason or detail.get("assignee") or detail.get("to") or ""
        if detail.get("note") in details.TIMELINE_NOTES:  # issue 11: the condition cleared by itself
            note = details.timeline_note(page.language, detail)
        if entry.action == "events_added" and detail.get("total"):
            note = page._("%(num)d events in all", num=int(detail["total"]))
        if entry.action in incident_accounts.RETENTION_ACTIONS:  # old events, the student's account
            action_name, note = incident_accounts.timeline_texts(page.language, entry.action, detail)
            rows.append({"at": entry.at, "actor": entry.actor, "action_name": action_name, "note": note})
            continue
        rows.append({
            "at": entry.at,
            "actor": entry.actor,
            "action_name": page._(presenters.TIMELINE_ACTIONS[entry.action])
            if entry.action in presenters.TIMELINE_ACTIONS else entry.action,
            "note": note,
        })
    return rows


def _incident_detail(page: Page, db: Session, viewer: Viewer, incident, *, notice: str | None = None,
                     error: str | None = None, status_code: int = 200) -> Response:
    ws = queries.workstations_by_id(db, {incident.agent_id} if incident.agent_id else set()).get(
        incident.agent_id)
    events = incidents.incident_events(db, incident.id, limit=EVENTS_SHOWN)
    assignee = db.get(Person, incident.assignee_id) if incident.assignee_id else None
    params = incidents.reader_params(db, [incident], viewer=viewer)[incident.id]
    title = presenters.incident_title(page.language, incident.rule, params,
                                      incidents.rule_title(incident.rule, incident.title))
    return page.render(
        "incident.html", status_code=status_code, page_title=page._("Incident %(id)d", id=incident.id),
        section="incidents", incident=incident, title=title, where=_where(ws, incident.seat),
        events=[presenters.event_view(e, page.perms) for e in events],
        # issue 11: details per event type in the reader's language (no Python data, no None)
        described={e.id: details.describe(page.language, e.type, e.data) for e in events
                   if page.perms.see_personal_data},
        event_names={e.id: details.event_name(page.language, e.type) for e in events},
        events_hidden=max(0, incident.event_count - len(events)),
        timeline=_timeline_rows(page, incident),
        assignee=(assignee.full_name or assignee.username) if assignee else None,
        assignees=queries.active_people(db) if page.perms.act_on_incidents else [],
        status_names=presenters.STATUS_NAMES, severity_names=presenters.SEVERITY_NAMES,
        role_names=presenters.ROLE_NAMES, notice=notice, error=error,
        resolution=incidents.resolution_text(incident, viewer=viewer, language=page.language),
        user_removed=incident_accounts.user_removed_text(page.language, incident),
    )


@router.get("/incidents/{incident_id}")
def incident_detail(request: Request, incident_id: int = IncidentId,
                    done: str | None = Query(None, max_length=32),
                    viewer: Viewer = Depends(READERS), db: Session = Depends(get_db)) -> Response:
    page = _page(request, db, viewer)
    incident = _load_visible_incident(db, viewer, incident_id)
    if incident is None:
        return page.error_page(404, page._("There is no incident number %(id)d that you may see.",
                                           id=incident_id))
    notice = page._(NOTICES[done]) if done in NOTICES else None
    if done in DECISION_NOTICES:  # an approval made from this incident's page (issue 11)
        notice = page._(DECISION_NOTICES[done])
    return _incident_detail(page, db, viewer, incident, notice=notice)


def _act(request: Request, db: Session, viewer: Viewer, incident_id: int, csrf_token: str, action
         ) -> Response:
    """Shared edge of the three incident actions (login and role: the route's scope): CSRF,
    then the service call."""
    page = _page(request, db, viewer)
    if not _form_csrf_ok(page, csrf_token):
        return _csrf_refused(page)
    incident = _load_visible_incident(db, viewer, incident_id)
    if incident is None:
        return page.error_page(404, page._("There is no incident number %(id)d that you may see.",
                                           id=incident_id))
    try:
        done = action(page)
    except KalkanError as exc:
        db.rollback()
        incident = incidents.get_incident(db, incident_id, viewer=viewer)
        return _incident_detail(page, db, viewer, incident, error=_service_error(page, exc),
                                status_code=exc.status_code)
    db.commit()
    return RedirectResponse(f"/incidents/{incident_id}?done={done}", status_code=303)


def _service_error(page: Page, exc: KalkanError) -> str:
    """The service's reason in the reader's language where we know it, else as the service said it."""
    if exc.code == "incident.already_resolved":
        return page._("This incident is already resolved; nothing was changed.")
    if exc.code == "incident.reason_missing":
        return page._("Write the reason before resolving: what was found and what was done.")
    if exc.code == "incident.reason_too_long":
        return page._("The reason is too long: at most 2000 characters.")
    if exc.code == "person.not_active":
        return page._("That person does not exist or is disabled; choose another.")
    return exc.message


@router.post("/incidents/{incident_id}/acknowledge")
def acknowledge(request: Request, incident_id: int = IncidentId, csrf_token: str = Form("", max_length=128),
                viewer: Viewer = Depends(ADMINS), db: Session = Depends(get_db)) -> Response:
    def action(page: Page) -> str:
        incidents.acknowledge(db, incident_id=incident_id, viewer=viewer)
        return "acknowledged"

    return _act(request, db, viewer, incident_id, csrf_token, action)


@router.post("/incidents/{incident_id}/resolve")
def resolve(request: Request, incident_id: int = IncidentId, csrf_token: str = Form("", max_length=128),
            reason: str = Form(""), viewer: Viewer = Depends(ADMINS), db: Session = Depends(get_db)
            ) -> Response:
    def action(page: Page) -> str:
        incidents.resolve(db, incident_id=incident_id, viewer=viewer, reason=reason)
        return "resolved"

    return _act(request, db, viewer, incident_id, csrf_token, action)


@router.post("/incidents/{incident_id}/assign")
def assign(request: Request, incident_id: int = IncidentId, csrf_token: str = Form("", max_length=128),
           assignee_id: str = Form("", max_length=32), viewer: Viewer = Depends(ADMINS),
           db: Session = Depends(get_db)) -> Response:
    def action(page: Page) -> str:
        try:
            person_id = int(assignee_id) if assignee_id else None
        except ValueError:
            person_id = -1  # the service answers "does not exist" for it (also past MAX_ID)
        incidents.assign(db, incident_id=incident_id, viewer=viewer, assignee_id=person_id)
        return "assigned"

    return _act(request, db, viewer, incident_id, csrf_token, action)


# ----------------------------------------------------------------------------- workstations, ISUO


@router.get("/workstations")
def workstation_list(request: Request, viewer: Viewer = Depends(READERS), db: Session = Depends(get_db)
                     ) -> Response:
    page = _page(request, db, viewer)
    now = datetime.now(UTC)
    registered = agents.list_workstations(db, viewer=viewer)
    views = [presenters.workstation_view(ws, now) for ws in registered if not ws.revoked]
    return page.render(
        "workstations.html", page_title=page._("Workstations"), section="workstations",
        rows=presenters.sort_workstations(views), silent_after=presenters.SILENT_AFTER_MINUTES,
        collector_states=presenters.COLLECTOR_STATES,
    )


ISUO_SOURCES = {"proxy": N_("Seen by the filter"), "import": N_("Imported from ISUO")}


@router.get("/isuo")
def isuo_log(request: Request, viewer: Viewer = Depends(ADMINS), db: Session = Depends(get_db)) -> Response:
    page = _page(request, db, viewer)
    filt = presenters.IncidentFilter.from_query(None, None, request.query_params.get("page"))
    pagination = presenters.Pagination(page=filt.page, per_page=ISUO_PER_PAGE, total=0)
    found, total = queries.isuo_access(db, limit=ISUO_PER_PAGE, offset=pagination.offset)
    pagination = presenters.Pagination(page=filt.page, per_page=ISUO_PER_PAGE, total=total)
    rows = [
        {
            "started_at": a.started_at, "ended_at": a.ended_at, "room": room, "seat": a.seat,
            "os_user": a.os_user, "isuo_user": a.isuo_user, "host": a.host, "source": a.source,
        }
        for a, room in found
    ]
    return page.render("isuo.html", page_title=page._("ISUO access log"), section="isuo", rows=rows,
                       pagination=pagination, source_names=ISUO_SOURCES)

