"""The audit log page (004 §3.6): who did what, when; filters; CSV export.

Filters: `who` (actor, exact), `what` (action prefix, e.g. `person.` or `usb.allow`),
`target` (contains), `since` / `until` (dates, school time).  Newest first, 50 a page, by the
index on `audit_log.at`.  Actions and details are shown in the reader's language
(`audit_texts`).  The CSV has the same rows (up to 100 000): stable machine columns (the action
code, the detail as JSON), then the action and the detail in the reader's language.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console.kit import FormErrors, page_of
from policy_server.db.models import AuditRecord, Role
from policy_server.db.session import get_db
from policy_server.fleet import audit_texts
from policy_server.web import i18n

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)
PER_PAGE = 50
CSV_LIMIT = 100_000
SCHOOL_TZ = ZoneInfo(i18n.DEFAULT_TIMEZONE)


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip()) if text.strip() else None
    except ValueError:
        return None


def _query(who: str, what: str, target: str, since: date | None, until: date | None):
    stmt = select(AuditRecord)
    if who.strip():
        stmt = stmt.where(AuditRecord.actor == who.strip())
    if what.strip():
        stmt = stmt.where(AuditRecord.action.startswith(what.strip(), autoescape=True))
    if target.strip():
        stmt = stmt.where(AuditRecord.target.contains(target.strip(), autoescape=True))
    if since:
        stmt = stmt.where(AuditRecord.at >= datetime.combine(since, time.min, SCHOOL_TZ))
    if until:
        stmt = stmt.where(AuditRecord.at < datetime.combine(until + timedelta(days=1), time.min, SCHOOL_TZ))
    return stmt


@router.get("/audit")
def audit_log(request: Request, who: str = "", what: str = "", target: str = "", since: str = "",
              until: str = "", page_no: int = 1, viewer: scope.Viewer = Depends(ADMIN),
              db: Session = Depends(get_db)) -> Response:
    page = page_of(request, db)
    errors = FormErrors()
    since_d, until_d = _day(since), _day(until)
    if since and since_d is None:
        errors.add("since", page._("Write the date as YYYY-MM-DD, e.g. 2026-09-01."))
    if until and until_d is None:
        errors.add("until", page._("Write the date as YYYY-MM-DD, e.g. 2026-09-01."))
    stmt = _query(who, what, target, since_d, until_d)
    total = db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page_no = max(1, min(page_no, max(1, (total + PER_PAGE - 1) // PER_PAGE)))
    rows = list(db.scalars(stmt.order_by(AuditRecord.at.desc(), AuditRecord.id.desc())
                           .limit(PER_PAGE).offset((page_no - 1) * PER_PAGE)))
    actors = list(db.scalars(select(AuditRecord.actor).distinct().order_by(AuditRecord.actor).limit(200)))
    filters = {"who": who, "what": what, "target": target, "since": since, "until": until}
    query = urlencode({k: v for k, v in filters.items() if v})
    shown = [(r, audit_texts.action_title(page.language, r.action),
              audit_texts.detail_rows(page.language, r.detail)) for r in rows]
    return page.render("fleet/audit.html", page_title=page._("Audit log"), section="audit",
                       rows=shown, total=total, page_no=page_no,
                       pages=max(1, (total + PER_PAGE - 1) // PER_PAGE), filters=filters, actors=actors,
                       query=query, errors=errors)


@router.get("/audit.csv")
def audit_csv(request: Request, who: str = "", what: str = "", target: str = "", since: str = "",
              until: str = "", viewer: scope.Viewer = Depends(ADMIN),
              db: Session = Depends(get_db)) -> Response:
    stmt = _query(who, what, target, _day(since), _day(until))
    out = io.StringIO()
    writer = csv.writer(out)
    language = page_of(request, db).language
    # machine columns (stable, English names) first, then the same row for a person to read
    writer.writerow(["at_utc", "actor", "action", "target", "detail",
                     i18n.translate(language, "What"), i18n.translate(language, "Details")])
    for r in db.scalars(stmt.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(CSV_LIMIT)):
        writer.writerow([r.at.isoformat(timespec="seconds"), r.actor, r.action, r.target,
                         json.dumps(r.detail or {}, ensure_ascii=False, sort_keys=True),
                         audit_texts.action_title(language, r.action),
                         audit_texts.detail_text(language, r.detail)])
    stamp = datetime.now(SCHOOL_TZ).strftime("%Y%m%d-%H%M")
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="kalkan-audit-{stamp}.csv"',
                             "Cache-Control": "no-store"})
