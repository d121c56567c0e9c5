"""Timetable periods around "now" for tests that need a lesson running.

The timetable keeps a weekday and two HH:MM of school time, and refuses a period that ends before it
starts, as a school's timetable would: no lesson crosses midnight.  A test that made "a period from
five minutes ago for 45 minutes" therefore failed when run after 23:15 school time (a CI run did).
`period_fields` keeps such a period inside the school day; `wait_out_midnight` is for the few tests
whose period must end at an exact time and so cannot be shortened."""

from __future__ import annotations

import time as clock
from datetime import datetime, timedelta

from policy_server.timetable.service import SCHOOL_TZ

_DAY_END = (23, 59)  # the last minute the timetable can name


def wait_out_midnight(need: timedelta) -> None:
    """Sleeps past school midnight if less than `need` (plus a minute) is left of the school day.

    Only for short spans: the sleep is at most `need` + one minute."""
    local = datetime.now(SCHOOL_TZ)
    last_minute = local.replace(hour=_DAY_END[0], minute=_DAY_END[1], second=0, microsecond=0)
    if local + need >= last_minute:
        midnight = last_minute + timedelta(minutes=1)
        clock.sleep((midnight - local).total_seconds() + 1)


def period_fields(start: datetime, end: datetime, *, now: datetime | None = None) -> dict:
    """`add_period`'s weekday, starts and ends for [start, end), cut to the school day of `start`
    (and moved to the day of `end` if `start` is still yesterday), so a period holding "now"
    stays valid at any hour.  Raises when nothing of the day is left: call `wait_out_midnight`
    first when the period must last."""
    local_start, local_end = start.astimezone(SCHOOL_TZ), end.astimezone(SCHOOL_TZ)
    today = (now or datetime.now(SCHOOL_TZ)).astimezone(SCHOOL_TZ).date()
    if local_start.date() < local_end.date():
        if today == local_end.date():  # "now" is past midnight: start the period then
            local_start = local_end.replace(hour=0, minute=0)
        else:  # the period runs into tomorrow: end it at the day's last minute
            local_end = local_start.replace(hour=_DAY_END[0], minute=_DAY_END[1])
    starts, ends = local_start.strftime("%H:%M"), local_end.strftime("%H:%M")
    if ends <= starts:
        raise AssertionError(f"no minute of the school day is left for a period at {starts}; "
                             "call wait_out_midnight() first")
    return {"weekday": local_start.weekday() + 1, "starts": starts, "ends": ends}


def period_now(*, ago: timedelta, length: timedelta, need: timedelta = timedelta(minutes=2)) -> dict:
    """`add_period`'s fields for a period that began `ago` and lasts `length` (cut to the school
    day), with at least `need` of it still ahead: near midnight it first waits the day out."""
    wait_out_midnight(need)
    start = datetime.now(SCHOOL_TZ) - ago
    return period_fields(start, start + length)
