"""ISUO findings in a period, for the weekly summary (`reports`) and the review page.

`isuo_findings(db, start=, end=)` only reads: the incidents the ISUO checks opened whose
first sighting falls in [start, end), with their clauses, and counts by rule.  No names,
no logins (a summary goes to the director and the district: 002 §3.1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.db.models import Incident

# every rule the ISUO checks open (the three older ones in policy_server/rules/isuo.py too)
ISUO_RULES = (
    "isuo.unknown_login",
    "isuo.no_obligation",
    "isuo.after_blocked",
    "isuo.after_left",
    "isuo.outside_hours",
    "isuo.noncompliant_seat",
    "isuo.import_gap",
    "isuo.review_overdue",
    "isuo.student_lab",
    "isuo.storage",
    "isuo.unlocked",
)


@dataclass(frozen=True)
class Finding:
    incident_id: int
    rule: str
    clauses: tuple[str, ...]
    severity: str
    status: str
    first_seen_at: datetime
    seat: str | None


@dataclass(frozen=True)
class IsuoFindings:
    start: datetime
    end: datetime
    findings: tuple[Finding, ...]

    @property
    def by_rule(self) -> dict[str, int]:
        return dict(Counter(f.rule for f in self.findings))

    @property
    def open(self) -> int:
        return sum(1 for f in self.findings if f.status != "resolved")


def isuo_findings(db: Session, *, start: datetime, end: datetime) -> IsuoFindings:
    rows = db.execute(
        select(
            Incident.id,
            Incident.rule,
            Incident.clauses,
            Incident.severity,
            Incident.status,
            Incident.first_seen_at,
            Incident.seat,
        )
        .where(Incident.rule.in_(ISUO_RULES), Incident.first_seen_at >= start, Incident.first_seen_at < end)
        .order_by(Incident.first_seen_at, Incident.id)
    )
    return IsuoFindings(
        start, end, tuple(Finding(i, r, tuple(c or ()), s, st, at, seat) for i, r, c, s, st, at, seat in rows)
    )
