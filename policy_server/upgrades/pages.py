"""Agent upgrades in the responsible person's console (docs/operations.md "Upgrading seats").

/upgrades                    the versions the server holds, the current rollout, every seat's state
/upgrades (POST)             offer a version to every seat, N seats at a time, outside lessons
/upgrades/{id}/stop (POST)   stop offering it (seats upgrading now finish)
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console.kit import FormErrors, csrf_ok, csrf_refused, page_of, redirect, service_error
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.errors import KalkanError, NotFound
from policy_server.operations import apt_repo
from policy_server.upgrades import service
from policy_server.upgrades.texts import REASON_NAMES, STATE_NAMES
from policy_server.web.i18n import N_

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)

NOTICES = {
    "started": N_("The seats are offered the new version, a few at a time, never during a lesson "
                  "in their room."),
    "stopped": N_("The upgrade is stopped: no more seats are offered it."),
}


def _page(page, db, request, *, errors: FormErrors | None = None, values: dict | None = None,
          status_code: int = 200, notice: str | None = None) -> Response:
    rollout = service.latest_rollout(db)
    seats = service.rollout_seats(db, rollout) if rollout is not None else []
    versions = apt_repo.versions(request.app.state.settings)
    return page.render("upgrades/upgrades.html", status_code=status_code, page_title=page._("Agent upgrades"),
                       section="upgrades", rollout=rollout, seats=seats, versions=versions,
                       state_names=STATE_NAMES, reason_names=REASON_NAMES, errors=errors or FormErrors(),
                       notice=notice,
                       values=values or {"version": versions[-1] if versions else "", "batch_size": "3"})


@router.get("/upgrades")
def upgrades(request: Request, done: str = "", viewer: scope.Viewer = Depends(ADMIN),
             db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    return _page(page, db, request, notice=page._(NOTICES[done]) if done in NOTICES else None)


@router.post("/upgrades")
def upgrade_start(request: Request, csrf_token: str = Form(""), version: str = Form(""),
                  batch_size: str = Form("3"), viewer: scope.Viewer = Depends(ADMIN),
                  db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    values = {"version": version, "batch_size": batch_size}
    errors = FormErrors()
    try:
        n = int(batch_size.strip())
    except ValueError:
        n = 0
    if not 1 <= n <= service.MAX_BATCH:
        errors.add("batch_size", page._("Seats at a time is a whole number from 1 to %(num)d.",
                                        num=service.MAX_BATCH))
        return _page(page, db, request, errors=errors, values=values, status_code=422)
    try:
        service.start_rollout(db, actor=viewer.person.username, version=version.strip(), batch_size=n,
                              available=apt_repo.versions(request.app.state.settings))
    except KalkanError as exc:
        db.rollback()
        errors.add("version", service_error(page, exc))
        return _page(page, db, request, errors=errors, values=values, status_code=exc.status_code)
    db.commit()
    return redirect("/upgrades", done="started")


@router.post("/upgrades/{rollout_id}/stop")
def upgrade_stop(request: Request, rollout_id: int, csrf_token: str = Form(""),
                 viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    try:
        service.stop_rollout(db, actor=viewer.person.username, rollout_id=rollout_id)
    except NotFound:
        return page.error_page(404, page._("There is no such upgrade."))
    db.commit()
    return redirect("/upgrades", done="stopped")
