"""Weeks, periods and the school calendar (Kyrgyz public holidays), pure.

A week is an ISO week (`2026-W49`), Monday 00:00 to the next Monday 00:00 in the school's
time zone.  School days are Monday to Friday that are not public holidays; the agent-reporting
control expects a heartbeat on each of them and never on a holiday.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Fixed-date public holidays of the Kyrgyz Republic (Labour Code art. 113).  Moving feasts
# (Orozo Ait, Kurman Ait) differ each year and are added by `extra` (settings or --holiday).
FIXED_HOLIDAYS = ((1, 1), (1, 7), (2, 23), (3, 8), (3, 21), (5, 1), (5, 5), (5, 9), (8, 31),
                  (11, 7), (11, 8))

WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")


def holidays(year: int, extra: frozenset[date] = frozenset()) -> frozenset[date]:
    return frozenset(date(year, m, d) for m, d in FIXED_HOLIDAYS) | extra


def holidays_between(first: date, last: date, extra: frozenset[date] = frozenset()) -> frozenset[date]:
    found: set[date] = set(extra)
    for year in range(first.year, last.year + 1):
        found |= holidays(year)
    return frozenset(d for d in found if first <= d <= last)


def school_days(days: list[date], off: frozenset[date]) -> list[date]:
    return [d for d in days if d.weekday() < 5 and d not in off]


def parse_week(text: str) -> tuple[int, int]:
    """'2026-W49' -> (2026, 49); a clear error otherwise."""
    match = WEEK_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a week; write it as YEAR-Www, e.g. 2026-W49")
    year, week = int(match[1]), int(match[2])
    try:
        date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ValueError(f"{year} has no week {week}; ISO years have 52 or 53 weeks") from None
    return year, week


def week_label(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(year: int, week: int, tz: str) -> tuple[datetime, datetime]:
    """[Monday 00:00, next Monday 00:00) of the ISO week, local time, as UTC."""
    zone = ZoneInfo(tz)
    monday = date.fromisocalendar(year, week, 1)
    start = datetime.combine(monday, time(0), zone)
    end = datetime.combine(monday + timedelta(days=7), time(0), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def range_bounds(first: date, last: date, tz: str) -> tuple[datetime, datetime]:
    """[first 00:00, the day after last 00:00), local time, as UTC."""
    zone = ZoneInfo(tz)
    return (datetime.combine(first, time(0), zone).astimezone(UTC),
            datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(UTC))


def previous_week(year: int, week: int) -> tuple[int, int]:
    monday = date.fromisocalendar(year, week, 1) - timedelta(days=7)
    y, w, _ = monday.isocalendar()
    return y, w


def last_full_week(now: datetime, tz: str) -> tuple[int, int]:
    """The ISO week before the one `now` falls in (what Monday's weekly job makes)."""
    today = now.astimezone(ZoneInfo(tz)).date()
    y, w, _ = (today - timedelta(days=7)).isocalendar()
    return y, w
