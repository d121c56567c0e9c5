"""When the weekly full scan runs (pure functions over plain data).

The policy names a day and a window outside lessons (default Saturday
10:00–16:00, school local time).  Like anacron, what matters is whether the
scan of the *latest* scheduled window has been done, not whether the machine
was on at that moment:

* due      = no full scan completed since the latest scheduled window began;
* run now  = due and (inside the window, or the machine is idle: a catch-up).

"Idle" is decided by the caller: no one logged in at the console and no lesson
running in the room.  A scan interrupted by a reboot keeps its checkpoint and
is still due, so the same rule resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from policy_server.protocol import AntivirusSection, PolicyBundle


@dataclass(frozen=True)
class ScanDecision:
    run: bool
    catch_up: bool
    reason: str
    window_start: datetime  # the latest scheduled window's start (aware)
    window_end: datetime


def _hhmm(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"time {text!r} is not a valid HH:MM between 00:00 and 23:59")
    return time(hours, minutes)


def window_length(section: AntivirusSection) -> timedelta:
    start, end = _hhmm(section.window_start), _hhmm(section.window_end)
    length = datetime.combine(datetime.min, end) - datetime.combine(datetime.min, start)
    if length <= timedelta(0):
        length += timedelta(days=1)  # a window over midnight, e.g. 22:00–04:00
    return length


def latest_window(now: datetime, section: AntivirusSection, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The most recent scheduled window whose start is not after `now`."""
    local = now.astimezone(tz)
    start_time = _hhmm(section.window_start)
    days_back = (local.weekday() - section.scan_day) % 7
    start = datetime.combine(local.date() - timedelta(days=days_back), start_time, tzinfo=tz)
    if start > local:
        start -= timedelta(days=7)
    return start, start + window_length(section)


def decide(now: datetime, section: AntivirusSection, *, last_completed: datetime | None, idle: bool,
           tz: ZoneInfo | str = "Asia/Bishkek") -> ScanDecision:
    """Whether the weekly full scan should run at `now` (aware datetime)."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    start, end = latest_window(now, section, zone)
    if last_completed is not None and last_completed >= start:
        return ScanDecision(False, False, "done for this week", start, end)
    if start <= now < end:
        return ScanDecision(True, False, "scheduled window", start, end)
    if idle:
        return ScanDecision(True, True, "catch-up: the scheduled window was missed; the machine is idle",
                            start, end)
    return ScanDecision(False, True, "due (missed window); waiting for the machine to be idle", start, end)


def lesson_running(bundle: PolicyBundle, room: str | None, now: datetime) -> bool:
    """A supervised lesson is going on in this room: a full scan must not slow it down."""
    return any(lesson.starts_at <= now < lesson.ends_at and (room is None or lesson.room == room)
               for lesson in bundle.lessons)
