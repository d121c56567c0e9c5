"""The district console: every school's controls side by side, the trend, schools not
reporting; people-related counts suppressed (service.suppress).  Role `district` only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.console import kit
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.district import service
from policy_server.summaries import render

router = APIRouter(include_in_schema=False)


@router.get("/district")
def district_page(
    request: Request,
    period: str | None = None,
    db: Session = Depends(get_db),
    viewer: scope.Viewer = Depends(scope.allow(Role.district)),
) -> Response:
    page = kit.page_of_person(request, db, viewer.person)
    pic = service.picture(db, period=period)
    trend = render.trend_svg(
        [
            {
                "period": t["period"],
                "score": t["score"],
                "state": "good" if (t["score"] or 0) >= 95 else "attention",
            }
            for t in pic.trend
        ],
        title=page._("District score of the last weeks"),
    )
    names = {k: page._(v) for k, v in render.CONTROL_NAMES.items()}
    return page.render(
        "district/district.html",
        page_title=page._("District"),
        section="district",
        pic=pic,
        trend_chart=trend,
        control_keys=service.CONTROL_KEYS,
        control_names=names,
        count_columns=service.COUNT_COLUMNS,
        min_schools=service.MIN_SCHOOLS,
        percent=render.percent,
        state_names={k: page._(v) for k, v in render.STATE_NAMES.items()},
    )
