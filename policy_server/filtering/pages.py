"""The responsible person's filtering pages (issue 12): the report queue, the policy editor
(with the difference shown before saving), the policy history with rollback, "try a URL",
and the category lists.

Every page works without JavaScript; every change is a POST form with the CSRF token,
answered with a redirect (or, for the editor, with the preview page to confirm).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.errors import KalkanError
from policy_server.filtering import editor, lists, queue, trial
from policy_server.policies.service import current_bundle
from policy_server.web import queries
from policy_server.web.i18n import N_
from policy_server.web.pages import Page

router = APIRouter(include_in_schema=False)

MAX_UPLOAD = 5 << 20
NOTICES = {
    "saved": N_("Saved: the new policy version is on its way to every seat."),
    "decided": N_("Decided. A block or allow reaches every seat within seconds."),
    "lists": N_("The category lists were updated."),
}
STATUS_NAMES = {"received": N_("Received"), "blocked": N_("Blocked"), "allowed": N_("Allowed"),
                "rejected": N_("Rejected"), "all": N_("All")}
KIND_NAMES = {"report": N_("report"), "unblock": N_("unblock request")}
PARTS = {"groups": N_("Groups"), "matrix": N_("Categories"), "lists": N_("Lists"),
         "schedule": N_("Time and lessons"), "options": N_("Other settings")}
MODE_NAMES = {"default": N_("default"), "open": N_("open (the group's rules)"),
              "allow_list": N_("only the allow-list"), "no_internet": N_("no internet")}
KIND_LABELS = {"student": N_("students"), "teacher": N_("teachers"), "staff": N_("staff"),
               "admin": N_("administrators")}
DOWNLOAD_NAMES = {"executable": N_("programs (.exe)"), "installer": N_("installers"),
                  "script": N_("scripts"), "archive": N_("archives"), "media": N_("audio and video"),
                  "torrent": N_("torrents")}
ACTION_NAMES = {"allow": N_("allowed"), "block": N_("blocked")}


def page_viewer(request: Request, db: Session = Depends(get_db)) -> scope.Viewer | None | bool:
    """Route scope for pages: the responsible person's viewer; None when nobody is logged in
    (login redirect), False for another role (the error page)."""
    try:
        return scope.allow(Role.admin)(request, db)
    except scope.NotLoggedIn:
        return None
    except scope.NotAllowed:
        return False


page_viewer.kalkan_scope = ("roles", frozenset({str(Role.admin)}))  # type: ignore[attr-defined]


def _page(request: Request, db: Session) -> Page:
    from policy_server.people import auth

    return Page.for_request(request, auth.optional_person(request, db),
                            default_language=queries.school_language(db))


def _gate(request: Request, db: Session, viewer) -> tuple[Page, Response | None]:
    page = _page(request, db)
    if viewer is None:
        return page, page.login_redirect()
    if viewer is False:
        return page, page.error_page(403, page._("Your role may not see or do this. "
                                                 "Ask the school's responsible person if you need it."))
    return page, None


def _csrf_ok(page: Page, token: str | None) -> bool:
    return bool(page.csrf_token and token and hmac.compare_digest(page.csrf_token, str(token)))


def _error_texts(page: Page, exc: KalkanError) -> list[str]:
    if isinstance(exc, editor.ListInputError):
        return [*exc.texts(page._), page._(editor.NOTHING_SAVED)]
    return [exc.message]


def _categories():
    from filters.categories import CATEGORIES

    return list(CATEGORIES.values())


def _render(page: Page, template: str, title: str, *, status_code: int = 200, **context: Any) -> Response:
    return page.render(f"filtering/{template}", status_code=status_code, page_title=title,
                       section="filtering",
                       **context)


def _notice(page: Page, request: Request) -> str | None:
    done = request.query_params.get("done")
    return page._(NOTICES[done]) if done in NOTICES else None


# ----------------------------------------------------------------------------- the queue


@router.get("/filtering/queue")
def queue_page(request: Request, status: str = "received", viewer=Depends(page_viewer),
               db: Session = Depends(get_db)) -> Response:
    return _queue_view(request, db, viewer, status, [])


def _queue_view(request: Request, db: Session, viewer, status: str, errors: list[str]) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    status = status if status in STATUS_NAMES else "received"
    rows = queue.list_queue(db, viewer=viewer, status=status)
    db.commit()
    bundle = current_bundle(db)
    return _render(page, "queue.html", page._("Reports and unblock requests"), rows=rows, status=status,
                   counts=queue.counts(db), status_names=STATUS_NAMES, kind_names=KIND_NAMES,
                   groups=[g.name for g in bundle.groups], errors=errors, status_code=422 if errors else 200,
                   notice=_notice(page, request), category_name=_category_namer(page.language))


def _category_namer(language: str):
    from filters.categories import names

    return lambda ids: ", ".join(names(list(ids), language))


@router.post("/filtering/queue/decide")
async def queue_decide(request: Request, viewer=Depends(page_viewer),
                       db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    form = await request.form()
    if not _csrf_ok(page, form.get("csrf_token")):
        return page.error_page(403, page._("The form's security token is missing or out of date. "
                                           "Go back, reload the page and try again."))
    quick = str(form.get("quick") or "")
    try:
        if quick:  # one click on a row: "block:school:ID", "allow:seat:ID", "reject:ID" is not offered
            action, where, ident = quick.split(":", 2)
            ids = [int(ident)]
            target = None
        else:
            ids = [int(i) for i in form.getlist("ids")]
            choice = str(form.get("decision") or "")
            action, _, where = choice.partition(":")
            target = str(form.get("group") or "") if where == "group" else (
                str(form.get("seat") or "") or None if where == "seat" else None)
        if not ids:
            raise editor.InvalidInput(page._("Tick at least one item in the queue first."))
        until = _parse_until(str(form.get("until") or ""), current_bundle(db).filtering.timezone, page)
        queue.decide(db, viewer=viewer, ids=ids, action=action, scope=where or "school", target=target,
                     until=until, reason=str(form.get("reason") or ""),
                     entry=str(form.get("entry") or "") or None)
    except (KalkanError, ValueError) as exc:
        db.rollback()
        message = _error_texts(page, exc) if isinstance(exc, KalkanError) else [
            page._("The decision was not understood; choose it again.")]
        return _queue_view(request, db, viewer, str(form.get("status") or "received"), message)
    db.commit()
    return RedirectResponse(f"/filtering/queue?status={form.get('status') or 'received'}&done=decided",
                            status_code=303)


def _parse_until(text: str, timezone: str, page: Page) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise editor.InvalidInput(page._("The expiry %(text)s is not a date and time; pick it again.",
                                         text=text)) from None
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(timezone))


# ----------------------------------------------------------------------------- the editor


def _editor_context(db: Session, bundle) -> dict[str, Any]:
    f = bundle.filtering
    return {
        "bundle": bundle, "categories": _categories(), "groups": bundle.groups,
        "kind_labels": KIND_LABELS, "mode_names": MODE_NAMES, "download_names": DOWNLOAD_NAMES,
        "parts": PARTS, "lists": editor.LIST_NAMES,
        "bands_text": {g: "\n".join(_band_text(b) for b in bands) for g, bands in f.schedules.items()},
        "holidays_text": "\n".join(d.isoformat() for d in f.holidays),
        "site_categories_text": "\n".join(f"{e} {','.join(c)}" for e, c in f.site_categories.items()),
    }


def _band_text(band) -> str:
    names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    days = sorted(band.days)
    span = names[days[0]] if len(days) == 1 else f"{names[days[0]]}-{names[days[-1]]}"
    return f"{span} {band.start}-{band.end}"


@router.get("/filtering/policy")
def policy_page(request: Request, part: str = "matrix", viewer=Depends(page_viewer),
                db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    part = part if part in PARTS else "matrix"
    bundle = current_bundle(db)
    return _render(page, "policy.html", page._("Filtering policy"), part=part, notice=_notice(page, request),
                   errors=[], form={}, **_editor_context(db, bundle))


async def _form_and_upload(request: Request) -> tuple[dict[str, Any], tuple[str, bytes] | None]:
    form = await request.form()
    data: dict[str, Any] = {}
    upload = None
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            content = await value.read(MAX_UPLOAD + 1)
            if value.filename:
                upload = (value.filename, content)
            continue
        data[key] = value
    return data, upload


@router.post("/filtering/policy/preview")
async def policy_preview(request: Request, viewer=Depends(page_viewer),
                       db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    form, upload = await _form_and_upload(request)
    if not _csrf_ok(page, form.get("csrf_token")):
        return page.error_page(403, page._("The form's security token is missing or out of date. "
                                           "Go back, reload the page and try again."))
    kind = str(form.get("kind") or "")
    if upload is not None and len(upload[1]) > MAX_UPLOAD:
        return _editor_error(page, db, form, [page._("The file is larger than 5 MB; split it or put it into "
                                                      "the category lists.")])
    try:
        proposal = editor.propose(db, kind, form, upload=upload if upload and upload[1] is not None else None)
        before, rows = editor.preview(db, proposal)
    except KalkanError as exc:
        return _editor_error(page, db, form, _error_texts(page, exc))
    if upload is not None and kind == "list":
        # the file was read and checked: its entries travel on as text, so the confirm needs no file
        changed = proposal.change(before.model_copy(deep=True)).filtering
        name, group = form.get("list"), form.get("group") or ""
        entries = getattr(changed, name)[group] if name.startswith("group_") else getattr(changed, name)
        form = {**form, "entries": "\n".join(entries), "mode": "replace"}
    fields = {k: v for k, v in form.items() if k != "csrf_token"}
    return _render(page, "preview.html", page._("Check the change before saving"), rows=rows, fields=fields,
                   proposal=proposal, base_version=before.version)


def _editor_error(page: Page, db: Session, form: dict, errors: list[str]) -> Response:
    bundle = current_bundle(db)
    part = {"list": "lists", "matrix": "matrix", "groups": "groups", "schedule": "schedule",
            "options": "options"}.get(str(form.get("kind")), "matrix")
    return _render(page, "policy.html", page._("Filtering policy"), status_code=422, part=part, errors=errors,
                   form=form, notice=None, **_editor_context(db, bundle))


@router.post("/filtering/policy/apply")
async def policy_apply(request: Request, viewer=Depends(page_viewer),
                       db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    form, _upload = await _form_and_upload(request)
    if not _csrf_ok(page, form.get("csrf_token")):
        return page.error_page(403, page._("The form's security token is missing or out of date. "
                                           "Go back, reload the page and try again."))
    try:
        proposal = editor.propose(db, str(form.get("kind") or ""), form)
        base = str(form.get("base_version") or "")
        editor.apply(db, viewer=viewer, proposal=proposal, base_version=int(base) if base.isdigit() else None)
    except KalkanError as exc:
        db.rollback()
        return _editor_error(page, db, form, _error_texts(page, exc))
    db.commit()
    part = {"list": "lists", "rollback": "matrix", "starting": "matrix"}.get(str(form.get("kind")),
                                                                             str(form.get("kind")))
    if form.get("kind") == "rollback":
        return RedirectResponse("/filtering/history?done=saved", status_code=303)
    return RedirectResponse(f"/filtering/policy?part={part}&done=saved", status_code=303)


# ----------------------------------------------------------------------------- history


@router.get("/filtering/history")
def history_page(request: Request, version: int | None = None, viewer=Depends(page_viewer),
                 db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    rows = editor.history(db)
    shown = version or (rows[0].version if rows else None)
    try:
        changes = editor.version_diff(db, shown) if shown else []
    except KalkanError:
        changes, shown = [], None
    return _render(page, "history.html", page._("Policy history"), rows=rows, shown=shown, changes=changes,
                   current=rows[0].version if rows else 0, notice=_notice(page, request))


# ----------------------------------------------------------------------------- try a URL


@router.get("/filtering/try")
def try_page(request: Request, url: str = "", room: str = "", viewer=Depends(page_viewer),
             db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    results, error = [], None
    if url:
        try:
            results = trial.try_url(db, state_dir=request.app.state.settings.state_dir, url=url,
                                    room=room or None, language=page.language)
        except KalkanError as exc:
            error = exc.message
    return _render(page, "try.html", page._("Try an address"), url=url, room=room, results=results,
                   error=error, action_names=ACTION_NAMES, kind_labels=KIND_LABELS)


# ----------------------------------------------------------------------------- category lists


@router.get("/filtering/lists")
def lists_page(request: Request, viewer=Depends(page_viewer),
                       db: Session = Depends(get_db)) -> Response:
    return _lists_view(request, db, viewer, [])


def _lists_view(request: Request, db: Session, viewer, errors: list[str]) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    state = lists.list_state(db)
    current = lists.current_artifact(db)
    return _render(page, "lists.html", page._("Category lists"), state=state, current=current,
                   artifacts=lists.artifacts(db), errors=errors, notice=_notice(page, request),
                   status_code=422 if errors else 200,
                   category_name=_category_namer(page.language))


@router.post("/filtering/lists/update")
async def lists_update(request: Request, viewer=Depends(page_viewer),
                       db: Session = Depends(get_db)) -> Response:
    page, stop = _gate(request, db, viewer)
    if stop:
        return stop
    form = await request.form()
    if not _csrf_ok(page, form.get("csrf_token")):
        return page.error_page(403, page._("The form's security token is missing or out of date. "
                                           "Go back, reload the page and try again."))
    try:
        lists.update_lists(db, state_dir=request.app.state.settings.state_dir, actor=viewer.person.username,
                           source=str(form.get("source") or "") or None)
    except KalkanError as exc:
        db.rollback()
        lists.record_failure(db, exc.message)
        db.commit()
        return _lists_view(request, db, viewer, [exc.message])
    db.commit()
    return RedirectResponse("/filtering/lists?done=lists", status_code=303)
