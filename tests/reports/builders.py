"""Hand-built school weeks for the figure tests (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from reports import data
from reports.query import week_period

ALL_OK = {"proxy": "ok", "usb": "ok", "idle": "ok", "antivirus": "ok", "integrity": "ok"}


def at(day: date, hour: int = 9) -> datetime:
    """A local (Asia/Bishkek, UTC+6) school-day hour as UTC."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - timedelta(hours=6)


def week(year: int = 2026, number: int = 49, *, seats: int = 3, **changes) -> data.SchoolWeek:
    """`seats` healthy seats (pc-1 …) that pass every control; change what a test needs."""
    period = week_period(year, number, "Asia/Bishkek")
    days = period.school_days()
    ids = [f"a{i}" for i in range(1, seats + 1)]
    base = data.SchoolWeek(
        school="School 1", period=period,
        seats=tuple(data.Seat(a, f"Lab 1 / pc-{a[1:]}", period.start - timedelta(days=30)) for a in ids),
        heartbeat_days={a: frozenset(days) for a in ids},
        last_heartbeat={a: data.Heartbeat(at(days[-1], 17), 3, dict(ALL_OK)) for a in ids},
        events=tuple(data.Event(a, "av.health", at(days[-1], 10),
                                {"clamd_reachable": True, "signature_age_days": 1.0}) for a in ids),
        full_scans={a: at(days[-1], 12) for a in ids},
        baselines=frozenset(ids), incidents=(),
        policy_versions=((1, period.start - timedelta(days=60)), (3, period.start - timedelta(days=2))),
        backups=(at(days[0], 20),), now=period.end + timedelta(hours=1),
    )
    return replace(base, **changes)
