"""The server certificate's page in the responsible person's console: what `kalkan-server tls
status|rotate|activate|cancel` does, for a person who does not use the command line
(docs/operations.md "Rotating the server certificate").  The same service functions as the
command line (policy_server/certs/service.py): one code path, one audit trail (000 §3.2).

/server-certificate                   the served certificate, the next one, the seats holding it
/server-certificate/rotate (POST)     prepare the next certificate (announced at once)
/server-certificate/activate (POST)   make it the served one; refused while recently seen seats
                                      lack its pin unless "activate anyway" (`--force`)
/server-certificate/cancel (POST)     withdraw the next certificate
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.certs import rotation, service, texts
from policy_server.console.kit import FormErrors, csrf_ok, csrf_refused, page_of, redirect, service_error
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.errors import KalkanError
from policy_server.web.i18n import N_

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)
PATH = "/server-certificate"

NAV_LABEL = N_("Server certificate")
NOTICES = {
    "prepared": N_("The next certificate is prepared. The server announces it to every workstation now; "
                   "a workstation that is switched on learns it within a few minutes. Come back to this "
                   "page and activate it when the workstations in use hold it."),
    "cancelled": N_("The next certificate is withdrawn: its key is deleted and the workstations are told "
                    "to forget it. Nothing else changed."),
    "activated": N_("The next certificate is now the server's certificate."),
}
# The page's words for the service's refusals: what to do here, not on the command line.
PAGE_ERROR_TEXTS = {
    "tls.next_exists": N_("A next certificate is prepared already (%(fingerprint)s) and the workstations may "
                          "be learning it. Activate it or withdraw it below before you prepare another."),
    "tls.nothing_to_cancel": N_("There is no next certificate to withdraw. Reload the page to see the "
                                "current state."),
    "tls.no_next": N_("There is no next certificate to activate. Prepare one first (the button on this "
                      "page), then wait until the workstations hold it."),
    "tls.next_changed": N_("The next certificate changed while its workstations were counted. Reload the "
                           "page and try again."),
    "tls.seats_not_ready": N_("%(count)s workstation(s) seen in the last %(days)s days do not hold the next "
                              "certificate yet: %(names)s. If you activate now, each of them must be "
                              "enrolled again. Switch them on, wait a few minutes and reload this page; or "
                              "tick “Activate anyway” and activate."),
    "tls.no_certificate": N_("There is no server certificate at %(path)s yet. It is made when the server "
                             "starts with HTTPS; ask whoever installed the server."),
    "tls.files_not_writable": N_("The server may not write its certificate files in %(folder)s. Ask whoever "
                                 "installed the server to run: chown -R kalkan-server: %(folder)s — then try "
                                 "again."),
}
SHARED = N_("This certificate is shared by every school of this service, so only the service's operator "
            "changes it, on the service's machine (kalkan-server tls rotate, docs/operations.md). The "
            "counts below are this school's workstations.")
RESTART_FIRST = N_("The server has not been restarted since the last certificate was activated. Restart it "
                   "first (systemctl restart kalkan-server), then prepare the next certificate.")
PAGE_ERROR_TEXTS["tls.restart_first"] = RESTART_FIRST  # the service's refusal, in the page's words
NO_TLS = N_("This server does not serve HTTPS itself (it was started with --no-tls, e.g. behind a reverse "
            "proxy): there is no certificate of its own to change here.")


def _message(page, exc: KalkanError) -> str:
    text = PAGE_ERROR_TEXTS.get(exc.code or "")
    if text:
        try:
            return page._(text, **(exc.params or {}))
        except (KeyError, TypeError, ValueError):
            return page._(text.split("%(")[0])
    return service_error(page, exc)


def _read_only(settings) -> str | None:
    """Why the buttons are not offered here (a message id), or None."""
    if not settings.tls:
        return NO_TLS
    if service.shared_by_schools(settings):
        return SHARED
    return None


def _page(page, request: Request, db: Session, *, errors: FormErrors | None = None, status_code: int = 200,
          notice: str | None = None, restart: bool = False, force_checked: bool = False) -> Response:
    from policy_server.certs.served import served_fingerprint

    settings = request.app.state.settings
    now = datetime.now(UTC)
    serving = served_fingerprint(settings) if settings.tls else None
    state = service.status(settings, [("", db)], now=now, served_fingerprint=serving)
    ready = state.ready
    since = now - timedelta(days=state.days)
    recent_holding = ([s for s in ready.ready if s.last_seen_at is not None and s.last_seen_at >= since]
                      if ready else [])
    read_only = _read_only(settings)
    return page.render("certs/certificate.html", status_code=status_code, page_title=page._(NAV_LABEL),
                       section="certificate", state=state, ready=ready, recent_holding=recent_holding,
                       serving=serving, restart=restart or state.restart_needed,
                       restart_text=page._(texts.RESTART), replicas_text=page._(texts.REPLICAS),
                       read_only=page._(read_only) if read_only else None,
                       restart_first=page._(RESTART_FIRST), errors=errors or FormErrors(), notice=notice,
                       force_checked=force_checked)


@router.get(PATH)
def certificate(request: Request, done: str = "", viewer: scope.Viewer = Depends(ADMIN),
                db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    return _page(page, request, db, notice=page._(NOTICES[done]) if done in NOTICES else None,
                 restart=done == "activated")


def _refused(page, request, db, exc: KalkanError, field: str, **extra) -> Response:
    db.rollback()
    errors = FormErrors()
    errors.add(field, _message(page, exc))
    # a refusal about the server's state (nothing to withdraw, files): 409, never a 404 or a 5xx
    status = exc.status_code if exc.status_code in (409, 422) else 409
    return _page(page, request, db, errors=errors, status_code=status, **extra)


def _read_only_refusal(page, request, db) -> Response | None:
    why = _read_only(request.app.state.settings)
    if why is None:
        return None
    errors = FormErrors()
    errors.add("rotate", page._(why))
    return _page(page, request, db, errors=errors, status_code=409)


def _not_here(page, request: Request, db: Session, csrf_token: str) -> Response | None:
    """The answer when an action may not run at all: a forged form, or a read-only page."""
    if not csrf_ok(page, csrf_token):
        return csrf_refused(page)
    return _read_only_refusal(page, request, db)


@router.post(PATH + "/rotate")
def certificate_rotate(request: Request, csrf_token: str = Form(""), viewer: scope.Viewer = Depends(ADMIN),
                       db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if (refusal := _not_here(page, request, db, csrf_token)) is not None:
        return refusal
    from policy_server.certs.served import served_fingerprint

    settings = request.app.state.settings
    try:  # refused (tls.restart_first) while this process serves another certificate than the file's
        service.rotate(settings, [("", db)], actor=viewer.person.username,
                       served_fingerprint=served_fingerprint(settings) if settings.tls else None)
    except KalkanError as exc:
        return _refused(page, request, db, exc, "rotate")
    return redirect(PATH, done="prepared")


@router.post(PATH + "/activate")
def certificate_activate(request: Request, csrf_token: str = Form(""), anyway: str = Form(""),
                         viewer: scope.Viewer = Depends(ADMIN), db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if (refusal := _not_here(page, request, db, csrf_token)) is not None:
        return refusal
    try:
        service.activate(request.app.state.settings, [("", db)], actor=viewer.person.username,
                         days=rotation.DEFAULT_SEEN_DAYS, force=anyway == "yes")
    except KalkanError as exc:
        return _refused(page, request, db, exc, "anyway")
    return redirect(PATH, done="activated")


@router.post(PATH + "/cancel")
def certificate_cancel(request: Request, csrf_token: str = Form(""), viewer: scope.Viewer = Depends(ADMIN),
                       db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    if (refusal := _not_here(page, request, db, csrf_token)) is not None:
        return refusal
    try:
        service.cancel(request.app.state.settings, [("", db)], actor=viewer.person.username)
    except KalkanError as exc:
        return _refused(page, request, db, exc, "cancel")
    return redirect(PATH, done="cancelled")
