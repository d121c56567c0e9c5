"""The district server: schools enrol with a code and send signed weekly aggregates; the
district console compares them without exposing a single child (002 §3.1, 003 §3, §5).

Suppression (docs/reports.md): a count of people-related events (incidents, blocked attempts,
reports, storage attempts, ISUO findings) from 1 to `threshold - 1` is shown as "< threshold";
when a column total is shown and a column has only one suppressed cell, the next smallest
cell of that column is suppressed too (complementary suppression), so the total cannot give
it back; and no district figure (total, mean, trend point) is made from fewer than
`MIN_SCHOOLS` schools.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import utcnow
from policy_server.district import signing
from policy_server.district.models import DistrictSchool, DistrictWeek
from policy_server.errors import InvalidInput, NotFound, Unauthorized
from policy_server.summaries import errors as _errors  # noqa: F401  (registers the texts)

THRESHOLD = 10
MIN_SCHOOLS = 3
PERIOD_RE = re.compile(r"^\d{4}-W\d{2}$")
COUNT_COLUMNS = ("incidents", "blocked", "reports", "storage_attempts", "isuo")
CONTROL_KEYS = (
    "agent_reporting",
    "av_full_scan",
    "av_signatures",
    "integrity",
    "usb",
    "idle_lock",
    "filter",
    "backups",
)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _code(raw: str) -> str:
    return re.sub(r"[\s-]", "", raw).upper()


def add_school(db: Session, *, name: str, actor: str, days: int = 14) -> tuple[DistrictSchool, str]:
    """A school of the district and its one-time enrolment code (shown once)."""
    name = name.strip()
    if not name:
        raise InvalidInput("the school needs a name", code="district.name")
    raw = secrets.token_hex(5).upper()
    school = db.scalar(select(DistrictSchool).where(DistrictSchool.name == name))
    if school is None:
        school = DistrictSchool(id=str(uuid.uuid4()), name=name)
        db.add(school)
    school.code_hash = _sha256(raw)
    school.code_expires_at = utcnow() + timedelta(days=days)
    audit(db, actor=actor, action="district.school_code", target=name, detail={"days": days})
    db.flush()
    return school, f"{raw[:5]}-{raw[5:]}"


def enroll(db: Session, *, code: str, public_key: str) -> DistrictSchool:
    school = db.scalar(select(DistrictSchool).where(DistrictSchool.code_hash == _sha256(_code(code))))
    if school is None or (school.code_expires_at and school.code_expires_at < utcnow()):
        raise Unauthorized(
            "the district enrolment code is unknown, used or expired; ask the district office for a new one",
            code="district.bad_code",
        )
    if "BEGIN PUBLIC KEY" not in public_key:
        raise InvalidInput("public_key must be a PEM public key", code="district.bad_key")
    school.public_key = public_key
    school.enrolled_at = utcnow()
    school.code_hash = None  # one use
    audit(db, actor=f"school:{school.id}", action="district.enrolled", target=school.name)
    db.flush()
    return school


def receive(db: Session, *, school_id: str, period: str, aggregates: dict, signature: str) -> str:
    """Store one school's week once: "accepted", or "duplicate" when that week is already here."""
    school = db.get(DistrictSchool, school_id)
    if school is None or not school.public_key:
        raise NotFound("this school is not enrolled at the district", code="district.unknown_school")
    if not PERIOD_RE.match(period):
        raise InvalidInput("period must be an ISO week like 2026-W49", code="district.period")
    if not signing.verify(school.public_key, signing.canonical(school_id, period, aggregates), signature):
        raise Unauthorized("the signature does not match the school's key", code="district.bad_signature")
    if (
        db.scalar(
            select(DistrictWeek.id).where(DistrictWeek.school_id == school_id, DistrictWeek.period == period)
        )
        is not None
    ):
        return "duplicate"
    try:
        with db.begin_nested():
            db.add(
                DistrictWeek(school_id=school_id, period=period, aggregates=aggregates, signature=signature)
            )
    except IntegrityError:  # a concurrent send of the same week won
        return "duplicate"
    return "accepted"


# ----------------------------------------------------------------------------- the district picture


@dataclass
class Cell:
    value: float | int | None
    suppressed: bool = False


@dataclass
class Picture:
    period: str | None
    periods: list[str]
    schools: list[dict]  # {"name", "reported", "state", "score", "controls": {key: rate|None}, "seats"}
    counts: dict[str, dict[str, Cell]]  # school name -> column -> cell
    totals: dict[str, Cell]
    not_reporting: list[str]
    trend: list[dict]  # {"period", "score" (None if < MIN_SCHOOLS), "schools"}
    school_trends: dict[str, list[int | None]] = field(default_factory=dict)
    threshold: int = THRESHOLD


def _counts(agg: dict) -> dict[str, int]:
    return {
        "incidents": sum(f.get("opened", 0) for f in (agg.get("incidents") or {}).values()),
        "blocked": sum((agg.get("blocked") or {}).values()),
        "reports": (agg.get("queue") or {}).get("received", 0),
        "storage_attempts": agg.get("storage_attempts", 0),
        "isuo": sum((agg.get("isuo") or {}).values()),
    }


def suppress(column: dict[str, int], *, threshold: int, total_shown: bool) -> dict[str, Cell]:
    """Primary suppression of 1..threshold-1, then complementary suppression against the total."""
    cells = {k: Cell(v, 0 < v < threshold) for k, v in column.items()}
    if total_shown:
        hidden = [k for k, c in cells.items() if c.suppressed]
        if len(hidden) == 1:
            rest = sorted((c.value, k) for k, c in cells.items() if not c.suppressed)
            if rest:
                cells[rest[0][1]].suppressed = True
    for c in cells.values():
        if c.suppressed:
            c.value = None
    return cells


def picture(db: Session, *, period: str | None = None, weeks: int = 8, threshold: int = THRESHOLD) -> Picture:
    schools = list(db.scalars(select(DistrictSchool).order_by(DistrictSchool.name)))
    names = {s.id: s.name for s in schools}
    periods = sorted(set(db.scalars(select(DistrictWeek.period).distinct())), reverse=True)
    period = period or (periods[0] if periods else None)
    shown_periods = sorted(p for p in periods if period is None or p <= period)[-weeks:]
    rows = (
        db.execute(
            select(DistrictWeek.school_id, DistrictWeek.period, DistrictWeek.aggregates).where(
                DistrictWeek.period.in_(shown_periods)
            )
        ).all()
        if shown_periods
        else []
    )
    by_period: dict[str, dict[str, dict]] = {}
    for school_id, p, agg in rows:
        by_period.setdefault(p, {})[names.get(school_id, school_id)] = agg
    current = by_period.get(period, {}) if period else {}

    table = []
    for s in schools:
        agg = current.get(s.name)
        controls = {}
        if agg:
            for key in CONTROL_KEYS:
                c = (agg.get("controls") or {}).get(key) or {}
                controls[key] = (c["passed"] / c["total"]) if c.get("total") else None
        table.append(
            {
                "name": s.name,
                "reported": agg is not None,
                "enrolled": s.enrolled_at is not None,
                "state": agg.get("state") if agg else None,
                "score": agg.get("score") if agg else None,
                "seats": agg.get("seats") if agg else None,
                "controls": controls,
            }
        )

    total_shown = len(current) >= MIN_SCHOOLS
    raw = {name: _counts(agg) for name, agg in current.items()}
    counts: dict[str, dict[str, Cell]] = {name: {} for name in raw}
    totals: dict[str, Cell] = {}
    for col in COUNT_COLUMNS:
        column = suppress(
            {name: c[col] for name, c in raw.items()}, threshold=threshold, total_shown=total_shown
        )
        for name, cell in column.items():
            counts[name][col] = cell
        total = sum(c[col] for c in raw.values())
        totals[col] = Cell(total, False) if total_shown else Cell(None, True)

    trend = []
    for p in shown_periods:
        scores = [a.get("score") for a in by_period.get(p, {}).values() if a.get("score") is not None]
        ok = len(scores) >= MIN_SCHOOLS
        trend.append(
            {
                "period": p,
                "schools": len(by_period.get(p, {})),
                "score": round(sum(scores) / len(scores)) if ok else None,
            }
        )
    school_trends = {
        s.name: [by_period.get(p, {}).get(s.name, {}).get("score") for p in shown_periods] for s in schools
    }
    return Picture(
        period=period,
        periods=shown_periods,
        schools=table,
        counts=counts,
        totals=totals,
        not_reporting=[s.name for s in schools if s.name not in current],
        trend=trend,
        school_trends=school_trends,
        threshold=threshold,
    )


def week_count(db: Session) -> int:
    return len(list(db.scalars(select(DistrictWeek.id))))


def received_at(db: Session, school_id: str, period: str) -> datetime | None:
    return db.scalar(
        select(DistrictWeek.received_at).where(
            DistrictWeek.school_id == school_id, DistrictWeek.period == period
        )
    )
