"""Hand-built school weeks for the figure tests (no database), and the district's side: a
school enrolled at the district and a signed week sent to it (`enrol_school`, `send_week`)."""

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


def district_week(score: int, incidents: int, blocked: int, period: str = "2026-W48") -> dict:
    """A school's aggregates for one week as it sends them to the district."""
    return {"period": period, "state": "attention", "score": score, "seats": 30, "seats_reported": 29,
            "controls": {"av_full_scan": {"passed": 27, "total": 30}}, "storage_attempts": 0,
            "incidents": {"high": {"opened": incidents}}, "blocked": {"games": blocked},
            "queue": {"received": 0}, "lessons": {}, "isuo": {}}


def enrol_school(db, name: str) -> tuple[str, str]:
    """A school added at the district and enrolled with its own key: (school id, private key)."""
    from policy_server.district import service, signing

    school, code = service.add_school(db, name=name, actor="test")
    private, public = signing.new_key()
    service.enroll(db, code=code, public_key=public)
    return school.id, private


def send_week(db, school_id: str, private: str, period: str, aggregates: dict) -> str:
    """The school's signed week received by the district: "accepted" or "duplicate"."""
    from policy_server.district import service, signing

    return service.receive(db, school_id=school_id, period=period, aggregates=aggregates,
                           signature=signing.sign(private, signing.canonical(school_id, period, aggregates)))
