"""ISUO JSON API (read-only): the findings summary a report or a district server can read.

    GET /api/v1/isuo/findings?start=2026-11-01&end=2026-11-08   (responsible person, director)

Counts by rule and each finding's rule, clauses, severity, status, time and seat; no names
or logins (002 §3.1)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.errors import InvalidInput
from policy_server.isuo import error_texts  # noqa: F401  (registers the codes' texts)
from policy_server.isuo.findings import isuo_findings
from policy_server.isuo.rules import SCHOOL_TZ

router = APIRouter(prefix="/api/v1/isuo", tags=["isuo"])


def _day(value: str, name: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), time.min, SCHOOL_TZ).astimezone(UTC)
    except ValueError as exc:
        raise InvalidInput(
            f"{name}={value!r} is not a date; give it as 2026-11-01.",
            code="isuo.bad_date",
            params={"value": value},
        ) from exc


@router.get("/findings")
def findings(
    start: str,
    end: str,
    db: Session = Depends(get_db),
    viewer: scope.Viewer = Depends(scope.allow(Role.admin, Role.director)),
) -> dict:
    begin, finish = _day(start, "start"), _day(end, "end")
    if finish <= begin:
        raise InvalidInput("end must be after start (end is not included).", code="isuo.bad_period")
    result = isuo_findings(db, start=begin, end=finish)
    return {
        "start": start,
        "end": end,
        "by_rule": result.by_rule,
        "open": result.open,
        "findings": [
            {
                "id": f.incident_id,
                "rule": f.rule,
                "clauses": list(f.clauses),
                "severity": f.severity,
                "status": f.status,
                "first_seen_at": f.first_seen_at.isoformat(),
                "seat": f.seat,
            }
            for f in result.findings
        ],
    }
