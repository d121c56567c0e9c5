"""Fleet health and approvals pages of the responsible person's console (issue 11).

/fleet                       per control "passes on N of M seats"; seats failing > 1 day first
/fleet/seats/{agent_id}      one seat: every control with its reason and proof, history
/fleet/events/{event_id}     one event, described in the reader's language
/approvals                   USB devices blocked, integrity changes by package
/approvals/usb (POST)        allow this device / this model, or keep blocked
/approvals/integrity (POST)  accept the chosen changes (a whole package update at once)
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console.kit import csrf_ok, csrf_refused, page_of, redirect, service_error
from policy_server.db.models import Event, Role, utcnow
from policy_server.db.session import get_db
from policy_server.errors import KalkanError
from policy_server.fleet import approvals, service
from policy_server.incidents import details
from policy_server.web import i18n, presenters
from policy_server.web.i18n import N_
from policy_server.web.pages import safe_next

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)

NOTICES = {
    "usb_device": N_("The device is allowed on every seat (000 §6.5). The seats get the new policy at once."),
    "usb_model": N_("This model is allowed on every seat (000 §6.5). The seats get the new policy at once."),
    "usb_keep": N_("The device stays blocked; it is no longer listed here."),
    "integrity": N_("The changes are accepted as authorised (000 §4.2); the seats get the new policy "
                    "at once."),
}


def _when(value):
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def reason_text(language: str, check: service.Check) -> str:
    params = {k: _when(v) for k, v in check.params.items()}  # history rows keep times as text
    params = {k: i18n.format_datetime(v, language) if isinstance(v, datetime) else v
              for k, v in params.items()}
    return i18n.translate(language, check.reason, **params) if check.reason else ""


@router.get("/fleet")
def fleet(request: Request, control: str = "", viewer: scope.Viewer = Depends(ADMIN),
          db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    now = utcnow()
    summaries, seats = service.fleet(db, now=now)
    db.commit()  # the control changes noticed now
    if control in service.CONTROL_BY_KEY:
        seats = [s for s in seats if s.checks[control].passing is False]
    rows = [{
        "seat": s, "failing": [(service.CONTROL_BY_KEY[k], reason_text(page.language, s.checks[k]))
                               for k in s.failing],
        "unknown": [service.CONTROL_BY_KEY[k] for k, c in s.checks.items() if c.passing is None],
        "long": s.failing_long(now), "since": s.failing_since,
    } for s in seats]
    return page.render("fleet/fleet.html", page_title=page._("Fleet health"), section="fleet",
                       summaries=summaries, rows=rows, control=control,
                       control_label=(service.CONTROL_BY_KEY[control].label
                                      if control in service.CONTROL_BY_KEY else None),
                       total=len(seats), upgrade_failures=_upgrade_failures(db),
                       upgrade_reason_names=_upgrade_reason_names())


def _upgrade_failures(db: Session) -> list:
    from policy_server.upgrades.service import failed_seats  # seats whose agent upgrade failed

    return failed_seats(db)


def _upgrade_reason_names() -> dict:
    from policy_server.upgrades.pages import REASON_NAMES

    return REASON_NAMES


@router.get("/fleet/seats/{agent_id}")
def fleet_seat(request: Request, agent_id: str, viewer: scope.Viewer = Depends(ADMIN),
               db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    health = service.seat(db, agent_id)
    if health is None:
        return page.error_page(404, page._("There is no such workstation."))
    db.commit()
    checks = [(c, health.checks[c.key], reason_text(page.language, health.checks[c.key]))
              for c in service.CONTROLS]
    history = []
    for ch in service.seat_history(db, agent_id):
        detail = ch.detail or {}
        recorded = service.Check(ch.passing, detail.get("reason", ""), detail.get("params") or {})
        history.append({"at": ch.at, "control": service.CONTROL_BY_KEY.get(ch.control), "passing": ch.passing,
                        "reason": reason_text(page.language, recorded)})
    events = [{"event": e, "name": details.event_name(page.language, e.type),
               "summary": details.describe(page.language, e.type, e.data).summary}
              for e in service.seat_events(db, agent_id)]
    return page.render("fleet/seat.html", page_title=health.workstation.hostname, section="fleet",
                       seat=health, checks=checks, history=history, events=events,
                       incidents=[{"incident": i, "status": presenters.STATUS_NAMES.get(i.status, i.status),
                                   "title": presenters.incident_title(page.language, i.rule, i.params or {},
                                                                      i.title)}
                                  for i in service.seat_incidents(db, agent_id)])


@router.get("/fleet/events/{event_id}")
def fleet_event(request: Request, event_id: str, viewer: scope.Viewer = Depends(ADMIN),
                db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    event = db.get(Event, event_id)
    if event is None:
        return page.error_page(404, page._("There is no such event."))
    described = details.describe(page.language, event.type, event.data)
    return page.render("fleet/event.html", page_title=details.event_name(page.language, event.type),
                       section="fleet", event=event, described=described)


# ----------------------------------------------------------------------------- approvals


@router.get("/approvals")
def approvals_page(request: Request, done: str = "", viewer: scope.Viewer = Depends(ADMIN),
                   db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    return page.render("fleet/approvals.html", page_title=page._("Approvals"), section="approvals",
                       usb=approvals.usb_queue(db), groups=approvals.integrity_queue(db),
                       notice=page._(NOTICES[done]) if done in NOTICES else None,
                       change_kinds=details.CHANGE_KINDS)


def _back(next_url: str, done: str):
    target = safe_next(next_url) if next_url else "/approvals"
    joiner = "&" if "?" in target else "?"
    return redirect(f"{target}{joiner}done={done}") if target != "/approvals" else redirect(target, done=done)


@router.post("/approvals/usb")
def approve_usb(request: Request, csrf_token: str = Form(""), event_id: str = Form(""),
                decision: str = Form(""), next: str = Form(""), viewer: scope.Viewer = Depends(ADMIN),
                db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        if decision == "keep":
            approvals.keep_blocked(db, viewer=viewer, event_id=event_id)
        else:
            approvals.allow_usb(db, viewer=viewer, event_id=event_id, scope=decision)
    except KalkanError as exc:
        db.rollback()
        return page.error_page(exc.status_code if exc.status_code < 500 else 422, service_error(page, exc))
    db.commit()
    return _back(next, {"keep": "usb_keep", "model": "usb_model"}.get(decision, "usb_device"))


@router.post("/approvals/integrity")
def approve_integrity(request: Request, csrf_token: str = Form(""), event_ids: list[str] = Form([]),
                      next: str = Form(""), viewer: scope.Viewer = Depends(ADMIN),
                      db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        approvals.accept_integrity(db, viewer=viewer, event_ids=[e for e in event_ids if e][:2000])
    except KalkanError as exc:
        db.rollback()
        return page.error_page(exc.status_code if exc.status_code < 500 else 422, service_error(page, exc))
    db.commit()
    return _back(next, "integrity")
