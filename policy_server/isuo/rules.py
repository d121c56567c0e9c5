"""The ISUO cross-checks as pure functions: plain data in, an `IncidentDraft` (or None) out.

No database here (`checks.py` gathers the data).  Each rule cites its clauses; docs/isuo.md
lists them.  The three older checks (student lab, storage during a session, left unlocked)
stay in `policy_server/rules/isuo.py` and keep running from `policy_server.checks`.

| rule | what | clauses |
| --- | --- | --- |
| `isuo.unknown_login` | an ISUO login that no registered person holds | 002 §4.4, 002 §5.1 |
| `isuo.no_obligation` | a registered person with no signed obligation (annex 1.1) that day | 002 §4.4, §5.1 |
| `isuo.after_blocked` | access on or after the day the person's access was blocked | 002 §4.4, 002 §4.5 |
| `isuo.after_left` | access on or after the day the person left | 002 §4.4 |
| `isuo.outside_hours` | outside the school's working hours, on a day off or a holiday | 000 §5.6, 000 §6.4 |
| `isuo.noncompliant_seat` | full scan > 7 days old, integrity failing, antivirus unwell | 000 §5.4, §4.2 |
| `isuo.import_gap` | the proxies saw ISUO sessions on a day with no imported records | 000 §5.6, 000 §3.2 |
| `isuo.review_overdue` | the termly access review was not signed by its due date | 002 §4.5, 002 §4.4 |
| `isuo.student_lab` | an imported record from a student-lab seat outside a lesson | 002 §4.4, 000 §6.8 |
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from policy_server.rules import IncidentDraft, Severity

# Kyrgyzstan: UTC+6 all year, no daylight saving since 2005 (a fixed offset is ~10x cheaper to
# convert to than ZoneInfo("Asia/Bishkek"), which matters over a year of records).
SCHOOL_TZ = timezone(timedelta(hours=6), "Asia/Bishkek")
DAY_S = 86400
FULL_SCAN_MAX_AGE = timedelta(days=7)  # 000 §5.4: a full scan of every computer once a week


@dataclass(frozen=True)
class Access:
    """One ISUO access: an imported record or a session the proxy saw."""

    key: str  # stable: "rec:<row hash>" or "proxy:<IsuoAccess.id>"
    at: datetime
    login: str | None = None
    seat: str | None = None
    agent_id: str | None = None
    action: str = ""
    proxy_linked: bool = False  # the proxy saw this session (its own checks ran at ingest)

    local: datetime = field(init=False, repr=False, compare=False)  # school time, set once
    local_day: date = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        local = self.at.astimezone(SCHOOL_TZ)
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "local_day", local.date())

    @property
    def where(self) -> str:
        return self.seat or "—"


@dataclass(frozen=True)
class RegisteredUser:
    """A person in the register, as the rules see them."""

    user_id: int
    full_name: str
    isuo_role: str
    obligation_signed_on: date | None = None
    obligation_kept: bool = False  # a scan with its SHA-256, or the personal-file number
    blocked_on: date | None = None
    left_on: date | None = None


@dataclass(frozen=True)
class WorkingTime:
    """The school's working hours (local time), working weekdays (0 = Monday) and holidays."""

    start: time = time(8, 0)
    end: time = time(18, 0)
    weekdays: frozenset[int] = frozenset(range(6))  # Kyrgyz schools work Monday to Saturday
    holidays: frozenset[date] = frozenset()

    def why_outside(self, at: datetime) -> str | None:
        """None inside working time; else 'holiday', 'day_off' or 'hours'."""
        local = at if at.tzinfo is SCHOOL_TZ else at.astimezone(SCHOOL_TZ)
        if local.date() in self.holidays:
            return "holiday"
        if local.weekday() not in self.weekdays:
            return "day_off"
        if not (self.start <= local.time() < self.end):
            return "hours"
        return None


@dataclass(frozen=True)
class SeatHistory:
    """What a workstation reported over time (each sequence sorted by time).

    `full_scans`: completed full scans; `baselines`: integrity baselines (a good state);
    `integrity_bad`: tamper or unauthorised-change events; `av_health`: (time, problem or
    None) of each `av.health`; `known_since`: enrolment (a new seat is not late yet)."""

    full_scans: Sequence[datetime] = ()
    baselines: Sequence[datetime] = ()
    integrity_bad: Sequence[datetime] = ()
    av_health: Sequence[tuple[datetime, str | None]] = ()
    known_since: datetime | None = None


@dataclass(frozen=True)
class SeatState:
    problems: tuple[str, ...] = ()
    last_full_scan: datetime | None = None
    scan_age_days: float | None = None
    details: dict = field(default_factory=dict)


def _last_before(times: Sequence[datetime], at: datetime) -> datetime | None:
    i = bisect.bisect_right(times, at)
    return times[i - 1] if i else None


def seat_state_at(
    history: SeatHistory, at: datetime, *, max_scan_age: timedelta = FULL_SCAN_MAX_AGE
) -> SeatState:
    """Was the seat compliant at `at`?  Problems: scan_overdue, integrity_failing, antivirus_<problem>."""
    problems: list[str] = []
    last_scan = _last_before(history.full_scans, at)
    age = (at - last_scan) if last_scan else None
    if last_scan is not None:
        if age > max_scan_age:
            problems.append("scan_overdue")
    elif history.known_since is not None and at - history.known_since > max_scan_age:
        problems.append("scan_overdue")
    bad = _last_before(history.integrity_bad, at)
    good = _last_before(history.baselines, at)
    if bad is not None and (good is None or bad > good):
        problems.append("integrity_failing")
    health_times = [t for t, _ in history.av_health]
    i = bisect.bisect_right(health_times, at)
    if i:
        problem = history.av_health[i - 1][1]
        if problem:
            problems.append(f"antivirus_{problem}")
    return SeatState(tuple(problems), last_scan, round(age.total_seconds() / DAY_S, 1) if age else None)


# ----------------------------------------------------------------------------- the rules


def _draft(
    title: str, severity: Severity, clauses: tuple[str, ...], access: Access, *, rule: str, **params
) -> IncidentDraft:
    # one incident per rule, login and day: ten records of one session are one finding
    who = access.login or access.agent_id or "?"
    return IncidentDraft(
        rule=rule,
        title=title,
        severity=severity,
        clauses=clauses,
        dedup_key=f"{rule}:{who}:{access.local_day.isoformat()}",
        window_s=DAY_S,
        params={"login": access.login, "where": access.where, "at": access.at.isoformat(), **params},
    )


def unknown_login(access: Access, user: RegisteredUser | None) -> IncidentDraft | None:
    """A login the register does not know: nobody signed for it (002 §4.4, §5.1)."""
    if user is not None or not access.login:
        return None
    return _draft(
        f"ISUO login {access.login} is not in the register",
        Severity.high,
        ("002 §4.4", "002 §5.1"),
        access,
        rule="isuo.unknown_login",
    )


def no_obligation(access: Access, user: RegisteredUser | None) -> IncidentDraft | None:
    """A registered person with no signed obligation kept (scan or personal file) on that day."""
    if user is None:
        return None
    signed = user.obligation_signed_on
    if signed is not None and user.obligation_kept and signed <= access.local_day:
        return None
    return _draft(
        f"ISUO used by {user.full_name} without a signed obligation",
        Severity.high,
        ("002 §4.4", "002 §5.1"),
        access,
        rule="isuo.no_obligation",
        user_id=user.user_id,
        name=user.full_name,
    )


def after_blocked(access: Access, user: RegisteredUser | None) -> IncidentDraft | None:
    """Access on or after the day the person's ISUO access was blocked (002 §4.4, §4.5)."""
    if user is None or user.blocked_on is None or access.local_day < user.blocked_on:
        return None
    return _draft(
        f"ISUO used by {user.full_name} after the access was blocked",
        Severity.critical,
        ("002 §4.4", "002 §4.5"),
        access,
        rule="isuo.after_blocked",
        user_id=user.user_id,
        name=user.full_name,
        blocked_on=user.blocked_on.isoformat(),
    )


def after_left(access: Access, user: RegisteredUser | None) -> IncidentDraft | None:
    """Access on or after the day the person left the school (002 §4.4)."""
    if user is None or user.left_on is None or access.local_day < user.left_on:
        return None
    return _draft(
        f"ISUO used by {user.full_name} after leaving the school",
        Severity.critical,
        ("002 §4.4",),
        access,
        rule="isuo.after_left",
        user_id=user.user_id,
        name=user.full_name,
        left_on=user.left_on.isoformat(),
    )


def outside_hours(access: Access, working: WorkingTime) -> IncidentDraft | None:
    """Access outside working hours, on a day off or on a holiday (000 §5.6, §6.4)."""
    why = working.why_outside(access.local)
    if why is None:
        return None
    local = access.local
    return _draft(
        f"ISUO used outside working time ({why}) at {local:%Y-%m-%d %H:%M}",
        Severity.medium,
        ("000 §5.6", "000 §6.4"),
        access,
        rule="isuo.outside_hours",
        why=why,
        local_time=local.strftime("%Y-%m-%d %H:%M"),
    )


def noncompliant_seat(access: Access, history: SeatHistory | None) -> IncidentDraft | None:
    """Access from a seat that was not compliant at that moment (000 §5.4, §4.2)."""
    if history is None or access.agent_id is None:
        return None
    state = seat_state_at(history, access.at)
    if not state.problems:
        return None
    clauses = ("000 §5.4", "000 §4.2") if "integrity_failing" in state.problems else ("000 §5.4",)
    return _draft(
        f"ISUO used on {access.where}, a workstation out of compliance ({', '.join(state.problems)})",
        Severity.high,
        clauses,
        access,
        rule="isuo.noncompliant_seat",
        problems=list(state.problems),
        last_full_scan=state.last_full_scan.isoformat() if state.last_full_scan else None,
        scan_age_days=state.scan_age_days,
    )


def student_lab_seat(access: Access, *, student_lab: bool, lesson_running: bool) -> IncidentDraft | None:
    """An imported record from a seat in a student lab while no lesson ran there (002 §4.4,
    000 §6.8) — the same finding as `policy_server.rules.isuo.isuo_from_student_lab` makes from
    the proxy's sessions, for records the proxy did not see (a session it saw was judged at ingest)."""
    if not student_lab or lesson_running or access.proxy_linked or access.agent_id is None:
        return None
    return IncidentDraft(
        rule="isuo.student_lab",
        title=f"ISUO used on {access.where} in a student lab outside a lesson",
        severity=Severity.high,
        clauses=("002 §4.4", "000 §6.8"),
        dedup_key=f"isuo.student_lab:{access.agent_id}:{access.local_day.isoformat()}",
        window_s=DAY_S,
        params={
            "where": access.where,
            "login": access.login,
            "at": access.at.isoformat(),
            "why": "student_lab_no_lesson",
            "source": "import",
        },
    )


def check_access(
    access: Access, user: RegisteredUser | None, working: WorkingTime, history: SeatHistory | None
) -> list[IncidentDraft]:
    """Every per-access rule over one access (the order is the order of the table above)."""
    drafts = [
        unknown_login(access, user),
        no_obligation(access, user),
        after_blocked(access, user),
        after_left(access, user),
        outside_hours(access, working),
        noncompliant_seat(access, history),
    ]
    return [d for d in drafts if d is not None]


def check_accesses(
    accesses: Iterable[Access],
    users: Mapping[str, RegisteredUser],
    working: WorkingTime,
    histories: Mapping[str, SeatHistory],
) -> list[tuple[IncidentDraft, Access]]:
    """`check_access` over many accesses, one draft per dedup key (the first access that makes it).

    The same result as running `check_access` on every access and keeping the first draft of
    each key (a test holds this), without re-running a rule whose key (rule, login or seat,
    day) is already found: the person rules depend only on the login and the day, so they run
    once per login and day; the time rules run until they first fire that day."""
    drafts: dict[str, tuple[IncidentDraft, Access]] = {}
    person_checked: set[tuple[str, date]] = set()
    found: set[tuple[str, str, date]] = set()
    for access in accesses:
        who, day = access.login or access.agent_id or "?", access.local_day
        user = users.get(access.login) if access.login else None
        candidates = []
        if (who, day) not in person_checked:
            person_checked.add((who, day))
            candidates += [
                unknown_login(access, user),
                no_obligation(access, user),
                after_blocked(access, user),
                after_left(access, user),
            ]
        if ("isuo.outside_hours", who, day) not in found:
            candidates.append(outside_hours(access, working))
        if ("isuo.noncompliant_seat", who, day) not in found:
            candidates.append(noncompliant_seat(access, histories.get(access.agent_id or "")))
        for draft in candidates:
            if draft is not None:
                found.add((draft.rule, who, day))
                drafts.setdefault(draft.dedup_key, (draft, access))
    return list(drafts.values())


def import_gaps(
    proxy_days: Iterable[date],
    imported_days: Iterable[date],
    *,
    covered_from: date | None,
    covered_until: date | None,
) -> list[date]:
    """Days on which the proxies saw ISUO sessions but no imported record exists, within the
    period the imports cover (before the first import nothing was expected)."""
    if covered_from is None or covered_until is None:
        return []
    imported = set(imported_days)
    return sorted({d for d in proxy_days if covered_from <= d <= covered_until and d not in imported})


def import_gap(day: date, sessions: int) -> IncidentDraft:
    return IncidentDraft(
        rule="isuo.import_gap",
        title=f"No ISUO records imported for {day.isoformat()} "
        f"although the filter saw {sessions} ISUO session(s)",
        severity=Severity.medium,
        clauses=("000 §5.6", "000 §3.2"),
        dedup_key=f"isuo.import_gap:{day.isoformat()}",
        window_s=DAY_S,
        params={"day": day.isoformat(), "sessions": sessions},
    )


def review_overdue(*, due_on: date | None, signed_on_or_after_due: bool, today: date) -> IncidentDraft | None:
    """The termly review's due date has passed and no review was signed for it (002 §4.5)."""
    if due_on is None or signed_on_or_after_due or today <= due_on:
        return None
    return IncidentDraft(
        rule="isuo.review_overdue",
        title=f"The termly ISUO access review due {due_on.isoformat()} is not signed",
        severity=Severity.medium,
        clauses=("002 §4.5", "002 §4.4"),
        dedup_key=f"isuo.review_overdue:{due_on.isoformat()}",
        window_s=DAY_S * 366,
        params={"due_on": due_on.isoformat()},
    )
