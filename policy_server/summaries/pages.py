"""The director's pages: the weekly summary (HTML), its PDF and CSV tables, the kept weeks.

Route scope: the responsible person and the director (`scope.allow(Role.admin,
Role.director)`).  The summary holds no personal data (seat names, counts), so both see
the same page.  The director lands here after logging in (`policy_server/web/routes.py`).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console import kit
from policy_server.db.models import Role, utcnow
from policy_server.db.session import get_db
from policy_server.errors import KalkanError
from policy_server.summaries import render, service
from policy_server.web.pages import Page
from reports import query, weeks

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent / "static"
READERS = scope.allow(Role.admin, Role.director)


def _summary(db: Session, period: str) -> tuple[dict, bool]:
    """(summary dict, kept): the kept week, or the week computed now (not kept)."""
    kept = service.get_report(db, period)
    if kept is not None:
        return kept.summary, True
    year, week = service.parse_week(period)
    return service.compute_week(db, year, week).as_dict(), False


def _week(
    request: Request, db: Session, viewer: scope.Viewer, period: str
) -> tuple[Page, dict, bool] | Response:
    """(page, summary, kept) for the week's page, PDF and CSV; a 404 page for a bad week."""
    page = kit.page_of_person(request, db, viewer.person)
    try:
        summary, kept = _summary(db, period)
    except KalkanError as exc:
        return page.error_page(404, exc.in_language(page.language))
    return page, summary, kept


@router.get("/summaries/summaries.css", dependencies=[Depends(scope.public)])
def stylesheet() -> FileResponse:
    return FileResponse(
        STATIC / "summaries.css", media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("/summaries")
def latest(
    request: Request, db: Session = Depends(get_db), viewer: scope.Viewer = Depends(READERS)
) -> Response:
    # The last finished week: kept when Monday's job has run, otherwise computed now.
    year, week = weeks.last_full_week(utcnow(), query.school_timezone(db))
    period = f"{year}-W{week:02d}"
    return RedirectResponse(f"/summaries/{period}", status_code=303)


@router.get("/summaries/{period}")
def week_page(
    period: str, request: Request, db: Session = Depends(get_db), viewer: scope.Viewer = Depends(READERS)
) -> Response:
    found = _week(request, db, viewer, period)
    if isinstance(found, Response):
        return found
    page, summary, kept = found
    year, week = service.parse_week(period)
    prev = weeks.week_label(date.fromisocalendar(year, week, 1) - timedelta(days=7))
    nxt_monday = date.fromisocalendar(year, week, 1) + timedelta(days=7)
    nxt = weeks.week_label(nxt_monday)
    return page.render(
        "summaries/week.html",
        page_title=page._("Weekly compliance summary"),
        section="summaries",
        kept=kept,
        period=period,
        prev_period=prev,
        next_period=nxt,
        reports=[r.period for r in service.list_reports(db, limit=12)],
        tables=render.TABLES,
        table_links=render.TABLE_LINKS,
        **render.context(summary, page.language),
    )


@router.get("/summaries/{period}/summary.pdf")
def week_pdf(
    period: str, request: Request, db: Session = Depends(get_db), viewer: scope.Viewer = Depends(READERS)
) -> Response:
    found = _week(request, db, viewer, period)
    if isinstance(found, Response):
        return found
    page, summary, _kept = found
    body = render.pdf(summary, page.language)
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="kalkan-{period}-{page.language}.pdf"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/summaries/{period}/{table}.csv")
def week_csv(
    period: str,
    table: str,
    request: Request,
    db: Session = Depends(get_db),
    viewer: scope.Viewer = Depends(READERS),
) -> Response:
    if table not in render.TABLES:
        page = kit.page_of_person(request, db, viewer.person)
        return page.error_page(
            404, page._("There is no such table. The tables are: %(tables)s", tables=", ".join(render.TABLES))
        )
    found = _week(request, db, viewer, period)
    if isinstance(found, Response):
        return found
    page, summary, _kept = found
    return Response(
        render.csv_table(summary, table, page.language),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="kalkan-{period}-{table}.csv"',
            "Cache-Control": "no-store",
        },
    )
