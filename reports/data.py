"""The plain data the figures are computed from (no SQLAlchemy, no web).

`reports.query` fills these from the school's database; tests build them by hand.  Every
time is an aware UTC datetime; days are the school's local calendar days (`Period.tz`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from reports.weeks import school_days

DEFAULT_TZ = "Asia/Bishkek"


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC; `label` is e.g. "2026-W49" or "2026-09-01..2026-09-30"."""

    start: datetime
    end: datetime
    label: str
    tz: str = DEFAULT_TZ
    holidays: frozenset[date] = frozenset()

    def local_dates(self) -> list[date]:
        zone = ZoneInfo(self.tz)
        first = self.start.astimezone(zone).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(zone).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def school_days(self, *, until: datetime | None = None) -> list[date]:
        """Monday–Friday that are not holidays, up to `until` (a running week counts so far)."""
        days = school_days(self.local_dates(), self.holidays)
        if until is not None:
            today = until.astimezone(ZoneInfo(self.tz)).date()
            days = [d for d in days if d <= today]
        return days


@dataclass(frozen=True)
class Seat:
    agent_id: str
    name: str  # "Lab 1 / 07" or the host name: never a person's name
    enrolled_at: datetime


@dataclass(frozen=True)
class Heartbeat:
    """The last `agent.heartbeat` a seat sent in the period."""

    at: datetime
    policy_version: int | None
    collectors: dict[str, str]  # collector name -> state ("ok", "degraded", "failed", "stopped")


@dataclass(frozen=True)
class Event:
    """An event the figures need, reduced to what they read (no URL, no user: 001 §2.15)."""

    agent_id: str
    type: str
    at: datetime
    data: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Incident:
    id: int
    rule: str
    severity: str
    opened_at: datetime
    resolved_at: datetime | None
    agent_id: str | None = None


@dataclass(frozen=True)
class Lesson:
    id: str
    starts_at: datetime
    allow_list: bool


@dataclass(frozen=True)
class SchoolWeek:
    """Everything the figures of one period read."""

    school: str
    period: Period
    seats: tuple[Seat, ...]
    heartbeat_days: dict[str, frozenset[date]]  # agent_id -> local days with a heartbeat
    last_heartbeat: dict[str, Heartbeat]
    events: tuple[Event, ...]  # av.*, usb.blocked, idle.*, integrity.tampered, web.* of the period
    full_scans: dict[str, datetime]  # agent_id -> last completed full scan before the period's end
    baselines: frozenset[str]  # seats with an integrity baseline on the server before the end
    incidents: tuple[Incident, ...]  # opened before the end, and not resolved before the start
    policy_versions: tuple[tuple[int, datetime], ...]  # (version, created_at), oldest first
    usb_enforced: bool = True
    signature_max_age_days: int = 7
    lessons: tuple[Lesson, ...] = ()
    backups: tuple[datetime, ...] = ()  # backups made (and checked) in the period
    blocked_by_category: dict[str, int] = field(default_factory=dict)
    now: datetime | None = None  # when the data was read (a running period counts so far)
    # The report/unblock queue of the filtering console (policy_server/filtering): one
    # (first received, decided or None) per request; None: no queue yet, read the incidents.
    queue: tuple[tuple[datetime, datetime | None], ...] | None = None
