"""The narrow query module: the only code of `reports/` that touches the database.

`load_week(db, period)` reads what the figures of one period need and returns the plain
`reports.data.SchoolWeek`; everything after that is pure (`reports.figures`).  Heavy parts
are reduced in SQL: heartbeats become (seat, local day) pairs and one last heartbeat per
seat, so a school year of minute heartbeats is never loaded into Python.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from policy_server.db.models import (
    AuditRecord,
    Event,
    Incident,
    IncidentStatus,
    PolicyVersion,
    Room,
    School,
    TimelineEntry,
    Workstation,
)
from reports import data, weeks

# Event types whose rows the figures read (each a handful per seat and week).
FIGURE_TYPES = (
    "av.health",
    "av.scan.started",
    "usb.blocked",
    "idle.locked",
    "idle.lock_failed",
    "integrity.tampered",
    "web.report",
    "web.unblock_request",
)
LESSON_LOOKBACK = timedelta(days=14)


def school_name(db: Session) -> str:
    return db.scalar(select(School.name).order_by(School.id).limit(1)) or ""


def school_timezone(db: Session) -> str:
    bundle = db.scalar(select(PolicyVersion.bundle).order_by(PolicyVersion.version.desc()).limit(1))
    return ((bundle or {}).get("filtering") or {}).get("timezone") or data.DEFAULT_TZ


def week_period(year: int, week: int, tz: str, extra_holidays: frozenset = frozenset()) -> data.Period:
    start, end = weeks.week_bounds(year, week, tz)
    monday = start.astimezone(ZoneInfo(tz)).date()
    return data.Period(
        start,
        end,
        f"{year}-W{week:02d}",
        tz,
        weeks.holidays_between(monday, monday + timedelta(days=6), extra_holidays),
    )


def range_period(first, last, tz: str, extra_holidays: frozenset = frozenset()) -> data.Period:
    start, end = weeks.range_bounds(first, last, tz)
    return data.Period(
        start,
        end,
        f"{first.isoformat()}..{last.isoformat()}",
        tz,
        weeks.holidays_between(first, last, extra_holidays),
    )


def _local_day(db: Session, column, tz: str):
    if db.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone(tz, column))
    hours = datetime(2026, 1, 1, tzinfo=ZoneInfo(tz)).utcoffset().total_seconds() / 3600
    return func.date(column, f"{hours:+g} hours")


def _day(value) -> object:
    from datetime import date

    return value if isinstance(value, date) else date.fromisoformat(str(value))


def seats(db: Session, end: datetime) -> tuple[data.Seat, ...]:
    rows = db.execute(
        select(Workstation.id, Workstation.hostname, Workstation.seat, Room.name, Workstation.enrolled_at)
        .outerjoin(Room, Room.id == Workstation.room_id)
        .where(Workstation.token_revoked.is_(False), Workstation.enrolled_at < end)
        .order_by(Room.name, Workstation.seat, Workstation.hostname)
    ).all()
    out = []
    for agent_id, hostname, seat, room, enrolled_at in rows:
        name = (
            " / ".join(p for p in (room, seat) if p) if seat else " / ".join(p for p in (room, hostname) if p)
        )
        out.append(data.Seat(agent_id, name or hostname, enrolled_at))
    return tuple(out)


def load_week(db: Session, period: data.Period, *, now: datetime | None = None) -> data.SchoolWeek:
    start, end = period.start, period.end
    in_period = and_(Event.occurred_at >= start, Event.occurred_at < end)

    the_seats = seats(db, end)
    # Heartbeats are the bulk of the table (one a minute per seat): never scan them.  Per local
    # day, one query asks which seats have any heartbeat (an EXISTS probe on the
    # (agent_id, occurred_at) index each); per seat, the last heartbeat is one backwards step
    # on the same index.  A school year of 2.8 M rows costs the same as one week.
    beat_days: dict[str, set] = {}
    zone = ZoneInfo(period.tz)
    for local in period.local_dates():
        day_start = max(start, datetime.combine(local, datetime.min.time(), zone).astimezone(UTC))
        day_end = min(
            end, datetime.combine(local + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
        )
        probe = (
            select(Event.id)
            .where(
                Event.agent_id == Workstation.id,
                Event.type == "agent.heartbeat",
                Event.occurred_at >= day_start,
                Event.occurred_at < day_end,
            )
            .exists()
        )
        for (agent_id,) in db.execute(select(Workstation.id).where(probe)):
            beat_days.setdefault(agent_id, set()).add(local)

    last: dict[str, data.Heartbeat] = {}
    for seat in the_seats:
        row = db.execute(
            select(Event.occurred_at, Event.data)
            .where(Event.agent_id == seat.agent_id, Event.type == "agent.heartbeat", in_period)
            .order_by(Event.occurred_at.desc())
            .limit(1)
        ).first()
        if row is not None:
            at, payload = row
            collectors = {
                name: (h or {}).get("state", "") for name, h in (payload.get("collectors") or {}).items()
            }
            last[seat.agent_id] = data.Heartbeat(at, payload.get("policy_version"), collectors)

    events = tuple(
        data.Event(a, t, at, d or {})
        for a, t, at, d in db.execute(
            select(Event.agent_id, Event.type, Event.occurred_at, Event.data).where(
                Event.type.in_(FIGURE_TYPES), in_period
            )
        )
    )

    scans: dict[str, datetime] = {}
    for agent_id, at, d in db.execute(
        select(Event.agent_id, Event.occurred_at, Event.data).where(
            Event.type == "av.scan.completed",
            Event.occurred_at >= start - timedelta(days=7),
            Event.occurred_at < end,
        )
    ):
        if (d or {}).get("kind") == "full" and (agent_id not in scans or at > scans[agent_id]):
            scans[agent_id] = at

    baselines = frozenset(
        db.scalars(
            select(Event.agent_id)
            .where(Event.type == "integrity.baseline", Event.occurred_at < end)
            .distinct()
        )
    )

    blocked: dict[str, int] = {}
    for (d,) in db.execute(select(Event.data).where(Event.type == "web.blocked", in_period)):
        cats = (d or {}).get("categories") or []
        key = cats[0] if cats else "other"
        blocked[key] = blocked.get(key, 0) + 1

    resolved_at = (
        select(TimelineEntry.incident_id, func.max(TimelineEntry.at).label("at"))
        .where(TimelineEntry.action == "resolved")
        .group_by(TimelineEntry.incident_id)
        .subquery()
    )
    found = []
    for iid, rule, severity, status, first_seen, agent_id, res_at in db.execute(
        select(
            Incident.id,
            Incident.rule,
            Incident.severity,
            Incident.status,
            Incident.first_seen_at,
            Incident.agent_id,
            resolved_at.c.at,
        )
        .outerjoin(resolved_at, resolved_at.c.incident_id == Incident.id)
        .where(Incident.first_seen_at < end)
    ):
        res = res_at if status == IncidentStatus.resolved else None
        if res is not None and res < start:
            continue
        found.append(data.Incident(iid, rule, severity, first_seen, res, agent_id))

    versions = tuple(
        db.execute(
            select(PolicyVersion.version, PolicyVersion.created_at).order_by(PolicyVersion.version)
        ).tuples()
    )
    in_force = [v for v, created in versions if created < end]
    bundles = []
    if in_force:
        bundles = list(
            db.scalars(
                select(PolicyVersion.bundle)
                .where(
                    PolicyVersion.version <= in_force[-1], PolicyVersion.created_at >= start - LESSON_LOOKBACK
                )
                .order_by(PolicyVersion.version)
            )
        )
        current = db.scalar(select(PolicyVersion.bundle).where(PolicyVersion.version == in_force[-1]))
        if not bundles or bundles[-1] != current:
            bundles.append(current)
    lessons: dict[str, data.Lesson] = {}
    for bundle in bundles:
        for le in (bundle or {}).get("lessons") or []:
            try:
                starts = datetime.fromisoformat(str(le["starts_at"]).replace("Z", "+00:00")).astimezone(UTC)
            except (KeyError, ValueError):
                continue
            lessons[str(le.get("id"))] = data.Lesson(
                str(le.get("id")), starts, le.get("mode") == "allow_list"
            )
    # The lessons console (policy_server/lessons) keeps every lesson run in its own table.
    from policy_server.lessons.models import Lesson as LessonRow

    for lid, starts, mode in db.execute(
        select(LessonRow.id, LessonRow.starts_at, LessonRow.mode).where(
            LessonRow.starts_at >= start, LessonRow.starts_at < end
        )
    ):
        lessons[str(lid)] = data.Lesson(str(lid), starts, mode == "allow_list")
    current = bundles[-1] if bundles else {}
    usb_enforced = bool(((current or {}).get("usb") or {}).get("enforce", True))
    max_age = int(((current or {}).get("antivirus") or {}).get("signature_max_age_days", 7))

    backups = tuple(
        db.scalars(
            select(AuditRecord.at).where(
                AuditRecord.action.in_(("backup.created", "backup.checked")),
                AuditRecord.at >= start,
                AuditRecord.at < end,
            )
        )
    )

    # The filtering console's report/unblock queue (decisions with their times), when it has any.
    from policy_server.filtering.models import FilterRequest

    queue = None
    if db.scalar(select(FilterRequest.id).limit(1)) is not None:
        queue = tuple(
            db.execute(
                select(FilterRequest.first_at, FilterRequest.decided_at).where(
                    FilterRequest.first_at < end,
                    (FilterRequest.decided_at.is_(None)) | (FilterRequest.decided_at >= start),
                )
            ).tuples()
        )

    return data.SchoolWeek(
        school=school_name(db),
        period=period,
        seats=the_seats,
        heartbeat_days={a: frozenset(d) for a, d in beat_days.items()},
        last_heartbeat=last,
        events=events,
        full_scans=scans,
        baselines=baselines,
        incidents=tuple(found),
        policy_versions=versions,
        usb_enforced=usb_enforced,
        signature_max_age_days=max_age,
        lessons=tuple(lessons.values()),
        backups=backups,
        blocked_by_category=blocked,
        now=now,
        queue=queue,
    )
