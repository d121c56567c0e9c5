"""The compliance figures: pure functions over `reports.data`, each naming its clause.

Nothing here reads a database, a clock or a file.  The responsible person cannot make a
figure look better than it is: every per-seat control counts every enrolled seat (a seat
that never reported fails every control), the proof is what the agents sent (a scan counts
only when its `av.scan.completed` arrived), and resolving an incident never removes it from
the week it was opened in.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from reports.data import Event, Heartbeat, SchoolWeek

SEVERITIES = ("critical", "high", "medium", "low")
GOOD, ATTENTION, FAILING = "good", "attention", "failing"
GOOD_RATE = 0.95  # every control at or above: good
ATTENTION_RATE = 0.80  # every control at or above (and not good): attention; below: failing
POLICY_GRACE = timedelta(minutes=10)  # a heartbeat may still carry the version before a change
QUEUE_OVERDUE = timedelta(hours=48)


@dataclass(frozen=True)
class Control:
    """ "Passes on N of M seats", with the clause it checks and the seats that failed."""

    key: str
    clauses: tuple[str, ...]
    passed: int
    total: int
    failing: tuple[str, ...] = ()  # seat names (never a person)
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def applicable(self) -> bool:
        return self.total > 0

    @property
    def rate(self) -> float | None:
        return self.passed / self.total if self.total else None

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "clauses": list(self.clauses),
            "passed": self.passed,
            "total": self.total,
            "failing": list(self.failing),
            "extra": dict(self.extra),
        }


def _per_seat(week: SchoolWeek, key: str, clauses: tuple[str, ...], ok, **extra) -> Control:
    failing = tuple(sorted(s.name for s in week.seats if not ok(s.agent_id)))
    return Control(key, clauses, len(week.seats) - len(failing), len(week.seats), failing, extra)


def _events(week: SchoolWeek, *types: str) -> list[Event]:
    return [e for e in week.events if e.type in types]


def _state(week: SchoolWeek, agent_id: str, collector: str) -> str | None:
    beat: Heartbeat | None = week.last_heartbeat.get(agent_id)
    return beat.collectors.get(collector) if beat else None


# ----------------------------------------------------------------------------- per-seat controls


def seats_reported(week: SchoolWeek) -> Control:
    """Seats that sent anything (a heartbeat) in the period (000 §3.2)."""
    return _per_seat(week, "seats_reported", ("000 §3.2",), lambda a: bool(week.heartbeat_days.get(a)))


def agent_reporting(week: SchoolWeek) -> Control:
    """A heartbeat on every school day of the period (holidays and weekends not expected), from
    the day the seat was enrolled (000 §3.2)."""
    days = week.period.school_days(until=week.now)

    def ok(agent_id: str) -> bool:
        seat = next(s for s in week.seats if s.agent_id == agent_id)
        enrolled = seat.enrolled_at.astimezone(_zone(week)).date()
        expected = [d for d in days if d >= enrolled]
        return set(expected) <= week.heartbeat_days.get(agent_id, frozenset())

    if not days:  # a holiday week: nothing expected, nothing to fail
        return Control("agent_reporting", ("000 §3.2",), 0, 0, (), {"school_days": 0})
    return _per_seat(week, "agent_reporting", ("000 §3.2",), ok, school_days=len(days))


def _zone(week: SchoolWeek):
    from zoneinfo import ZoneInfo

    return ZoneInfo(week.period.tz)


def av_full_scan(week: SchoolWeek) -> Control:
    """A completed full scan (its `av.scan.completed`, the proof) within the 7 days before the
    period's end (000 §5.4).  A scan that stopped half-way sent no completion and fails."""
    end = min(week.period.end, week.now) if week.now else week.period.end
    since = end - timedelta(days=7)
    started = {e.agent_id for e in _events(week, "av.scan.started") if e.data.get("kind") == "full"}

    def ok(agent_id: str) -> bool:
        at = week.full_scans.get(agent_id)
        return at is not None and since <= at <= end

    control = _per_seat(week, "av_full_scan", ("000 §5.4",), ok)
    unfinished = sum(1 for a in started if not ok(a))
    return Control(
        control.key,
        control.clauses,
        control.passed,
        control.total,
        control.failing,
        {"unfinished": unfinished},
    )


def av_signatures(week: SchoolWeek) -> Control:
    """The last antivirus health report of the period: clamd answering and signatures no older
    than the policy's limit (000 §5.4)."""
    last: dict[str, Event] = {}
    for e in sorted(_events(week, "av.health"), key=lambda e: e.at):
        last[e.agent_id] = e

    def ok(agent_id: str) -> bool:
        e = last.get(agent_id)
        if e is None or not e.data.get("clamd_reachable"):
            return False
        age = e.data.get("signature_age_days")
        return age is not None and age <= week.signature_max_age_days

    return _per_seat(week, "av_signatures", ("000 §5.4",), ok, max_age_days=week.signature_max_age_days)


def integrity(week: SchoolWeek) -> Control:
    """A baseline on the server and no integrity finding left open at the period's end:
    every change either explained by a package update or accepted by the responsible person
    (000 §4.2).  Tampering with the baseline fails the seat for the period."""
    end = week.period.end
    open_findings = {
        i.agent_id
        for i in week.incidents
        if i.rule.startswith(("integrity.", "software."))
        and i.agent_id
        and i.opened_at < end
        and (i.resolved_at is None or i.resolved_at >= end)
    }
    tampered = {e.agent_id for e in _events(week, "integrity.tampered")}

    def ok(agent_id: str) -> bool:
        return agent_id in week.baselines and agent_id not in open_findings and agent_id not in tampered

    return _per_seat(week, "integrity", ("000 §4.2",), ok)


def usb(week: SchoolWeek) -> Control:
    """The USB policy is enforced (policy says so and the seat's USB collector is working) and
    how many foreign storage devices were refused (000 §6.5)."""
    attempts = sum(
        1 for e in _events(week, "usb.blocked") if "storage" in (e.data.get("device") or {}).get("kinds", [])
    )
    return _per_seat(
        week,
        "usb",
        ("000 §6.5",),
        lambda a: week.usb_enforced and _state(week, a, "usb") == "ok",
        storage_attempts=attempts,
        enforced=week.usb_enforced,
    )


def idle_lock(week: SchoolWeek) -> Control:
    """The idle lock works: its collector is healthy and no lock failed in the period
    (000 §6.4, §6.8)."""
    failed = {e.agent_id for e in _events(week, "idle.lock_failed")}
    locks = len(_events(week, "idle.locked"))
    return _per_seat(
        week,
        "idle_lock",
        ("000 §6.4", "000 §6.8"),
        lambda a: _state(week, a, "idle") == "ok" and a not in failed,
        locks=locks,
        failures=len(_events(week, "idle.lock_failed")),
    )


def policy_in_force(week: SchoolWeek, at: datetime) -> int | None:
    version = None
    for v, created in week.policy_versions:
        if created <= at:
            version = v
    return version


def filter_current(week: SchoolWeek) -> Control:
    """The filtering proxy runs and the seat enforces the policy in force when it last reported
    (a change of the last 10 minutes may not have arrived yet) (001 §2.11)."""

    def ok(agent_id: str) -> bool:
        beat = week.last_heartbeat.get(agent_id)
        if beat is None or beat.collectors.get("proxy") != "ok" or beat.policy_version is None:
            return False
        wanted = policy_in_force(week, beat.at - POLICY_GRACE)
        return wanted is None or beat.policy_version >= wanted

    return _per_seat(week, "filter", ("001 §2.11",), ok)


PER_SEAT = (agent_reporting, av_full_scan, av_signatures, integrity, usb, idle_lock, filter_current)


# ----------------------------------------------------------------------------- school-level figures


def backups(week: SchoolWeek) -> Control:
    """At least one backup made (and checked: `kalkan-server backup` reads it back) in the
    period (000 §3.2).  One "seat": the school."""
    made = sorted(b for b in week.backups if week.period.start <= b < week.period.end)
    return Control(
        "backups",
        ("000 §3.2",),
        1 if made else 0,
        1,
        () if made else ("server",),
        {"count": len(made), "last": made[-1].isoformat() if made else None},
    )


def _median_hours(deltas: list[timedelta]) -> float | None:
    if not deltas:
        return None
    return round(statistics.median(d.total_seconds() for d in deltas) / 3600, 1)


def incidents(week: SchoolWeek) -> dict[str, dict]:
    """Per severity: opened and resolved in the period, open at its end, median hours to
    resolve (of those resolved in the period) (004 §3.6)."""
    start, end = week.period.start, week.period.end
    out = {}
    for severity in SEVERITIES:
        mine = [i for i in week.incidents if i.severity == severity]
        resolved = [i for i in mine if i.resolved_at is not None and start <= i.resolved_at < end]
        out[severity] = {
            "opened": sum(1 for i in mine if start <= i.opened_at < end),
            "resolved": len(resolved),
            "open": sum(
                1 for i in mine if i.opened_at < end and (i.resolved_at is None or i.resolved_at >= end)
            ),
            "median_hours": _median_hours([i.resolved_at - i.opened_at for i in resolved]),
        }
    return out


def blocked(week: SchoolWeek) -> dict[str, int]:
    """Blocked attempts by category, counts only: no names, no URLs (001 §2.15)."""
    return dict(sorted(week.blocked_by_category.items(), key=lambda kv: (-kv[1], kv[0])))


def queue(week: SchoolWeek) -> dict:
    """The report and unblock queue: received in the period, median hours to a decision, still
    undecided after 48 h at the period's end (000 §8.3, 001 §2.6).  From the filtering
    console's queue when the school has one, else from the `web.report`/`web.unblock_request`
    incidents (a decision = the incident resolved)."""
    start, end = week.period.start, week.period.end
    received = sum(1 for e in _events(week, "web.report", "web.unblock_request") if start <= e.at < end)
    if week.queue is not None:
        items = list(week.queue)
    else:
        items = [
            (i.opened_at, i.resolved_at)
            for i in week.incidents
            if i.rule in ("web.report", "web.unblock_request")
        ]
    decided = [(o, d) for o, d in items if d is not None and start <= d < end]
    overdue = sum(1 for o, d in items if o < end - QUEUE_OVERDUE and (d is None or d >= end))
    return {
        "received": received,
        "decided": len(decided),
        "median_hours": _median_hours([d - o for o, d in decided]),
        "open_over_48h": overdue,
    }


def lessons(week: SchoolWeek) -> dict:
    """Lessons run in the period and how many used an allow-list (001 §2.9)."""
    run = [le for le in week.lessons if week.period.start <= le.starts_at < week.period.end]
    return {"run": len(run), "allow_list": sum(1 for le in run if le.allow_list)}


def isuo_findings(week: SchoolWeek) -> dict[str, int]:
    """Findings of the ISUO register's cross-checks opened in the period, by rule (000 §6.8)."""
    out: dict[str, int] = {}
    for i in week.incidents:
        if i.rule.startswith("isuo.") and week.period.start <= i.opened_at < week.period.end:
            out[i.rule] = out.get(i.rule, 0) + 1
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- the summary


def overall(controls: list[Control]) -> tuple[str, int | None]:
    """(state, score): score is the mean pass rate of the applicable controls in percent;
    good when every control passes on ≥ 95 %, attention when every one on ≥ 80 %."""
    rates = [c.rate for c in controls if c.rate is not None]
    if not rates:
        return ATTENTION, None
    score = round(100 * sum(rates) / len(rates))
    if min(rates) >= GOOD_RATE:
        return GOOD, score
    if min(rates) >= ATTENTION_RATE:
        return ATTENTION, score
    return FAILING, score


@dataclass
class Summary:
    school: str
    period: str
    start: datetime
    end: datetime
    made_at: datetime | None
    reported: Control
    controls: list[Control]  # regressions first, then the rest in the fixed order
    regressions: list[dict]  # {"key", "before", "now"} rates, largest drop first
    state: str
    score: int | None
    trend: list[dict]  # [{"period", "score", "state"}], oldest first, this period last
    failing_long: list[dict]  # [{"seat", "controls": [...]}]: failing this and the last period
    incidents: dict[str, dict]
    blocked: dict[str, int]
    queue: dict
    lessons: dict
    isuo: dict[str, int]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        out["made_at"] = self.made_at.isoformat() if self.made_at else None
        out["reported"] = self.reported.as_dict()
        out["controls"] = [c.as_dict() for c in self.controls]
        return out

    def aggregates(self) -> dict:
        """Counts and rates only, for the district (no seat names, no incident ids: 002 §3.1)."""
        return {
            "period": self.period,
            "state": self.state,
            "score": self.score,
            "seats": self.reported.total,
            "seats_reported": self.reported.passed,
            "controls": {c.key: {"passed": c.passed, "total": c.total} for c in self.controls},
            "storage_attempts": next(
                (c.extra.get("storage_attempts", 0) for c in self.controls if c.key == "usb"), 0
            ),
            "incidents": {s: {k: v for k, v in f.items()} for s, f in self.incidents.items()},
            "blocked": dict(self.blocked),
            "queue": dict(self.queue),
            "lessons": dict(self.lessons),
            "isuo": dict(self.isuo),
        }


def controls_of(week: SchoolWeek) -> list[Control]:
    return [f(week) for f in PER_SEAT] + [backups(week)]


def summarise(week: SchoolWeek, previous: list[SchoolWeek] = (), made_at: datetime | None = None) -> Summary:
    """The weekly summary: `previous` are the periods before, oldest first (for the trend, the
    regressions and the seats failing for more than a week)."""
    controls = controls_of(week)
    state, score = overall(controls)
    before = [controls_of(p) for p in previous]
    trend = [
        {"period": p.period.label, **dict(zip(("state", "score"), overall(c), strict=True))}
        for p, c in zip(previous, before, strict=True)
    ]
    trend.append({"period": week.period.label, "state": state, "score": score})

    regressions: list[dict] = []
    failing_long: dict[str, list[str]] = {}
    if before:
        last = {c.key: c for c in before[-1]}
        for c in controls:
            prev = last.get(c.key)
            if prev and prev.rate is not None and c.rate is not None and c.rate < prev.rate:
                regressions.append({"key": c.key, "before": round(prev.rate, 3), "now": round(c.rate, 3)})
            if prev:
                for seat in sorted(set(c.failing) & set(prev.failing)):
                    failing_long.setdefault(seat, []).append(c.key)
        regressions.sort(key=lambda r: (r["now"] - r["before"], r["key"]))
    first = [r["key"] for r in regressions]
    ordered = sorted(controls, key=lambda c: first.index(c.key) if c.key in first else len(first))

    return Summary(
        school=week.school,
        period=week.period.label,
        start=week.period.start,
        end=week.period.end,
        made_at=made_at,
        reported=seats_reported(week),
        controls=ordered,
        regressions=regressions,
        state=state,
        score=score,
        trend=trend,
        failing_long=[{"seat": s, "controls": k} for s, k in sorted(failing_long.items())],
        incidents=incidents(week),
        blocked=blocked(week),
        queue=queue(week),
        lessons=lessons(week),
        isuo=isuo_findings(week),
    )
