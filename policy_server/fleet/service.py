"""Fleet health: each seat's state per control, "passes on N of M seats" (000 §3.2).

Read from what the workstations already send, never by scanning all events:

* `Workstation.health` — the last heartbeat (every collector's state and detail, the policy
  version in force) and `last_seen_at`;
* four bounded queries on the indexed events (`ix_events_type_time`): full scans completed
  in the last 7 days (the proof event of 000 §5.4), integrity baselines (sealed), idle-lock
  failures in the last day; and the open integrity incidents per seat.

A control's result on a seat is `Check(passing, reason, …)`: `passing` is True, False, or
None (not known: the part never reported).  `reason` is an English message id, translated
on the page.  When a result changes, a `ControlChange` row is added (once per change, not
per heartbeat): the fleet page sorts seats failing for more than a day first, and a seat's
page shows the history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server.db.models import Event, Incident, IncidentStatus, Room, Workstation, utcnow
from policy_server.fleet.models import ControlChange
from policy_server.web.i18n import N_

SILENT_AFTER = timedelta(minutes=10)
FULL_SCAN_WITHIN = timedelta(days=7)  # 000 §5.4: a full scan weekly on every PC
LOCK_FAILURES_WITHIN = timedelta(days=1)
LONG_FAILING = timedelta(days=1)
OPEN_STATUSES = (IncidentStatus.new, IncidentStatus.acknowledged)


@dataclass(frozen=True)
class Control:
    key: str
    label: str  # message id
    clause: str


CONTROLS: tuple[Control, ...] = (
    Control("reporting", N_("Agent reporting"), "000 §3.2"),
    Control("filter", N_("Web filter running with the current policy"), "000 §8.1"),
    Control("antivirus", N_("Antivirus working, fresh signatures, full scan within 7 days"), "000 §5.4"),
    Control("integrity", N_("Integrity baseline sealed and clean"), "000 §4.2"),
    Control("usb", N_("USB storage control enforced"), "000 §6.5"),
    Control("idle", N_("Idle lock working"), "000 §6.4"),
    Control("firewall", N_("Firewall redirect installed"), "000 §5.6"),
)
CONTROL_BY_KEY = {c.key: c for c in CONTROLS}

# Known problems the agent reports, as message ids for the reader's language.
AV_PROBLEMS = {
    "clamd_missing": N_("The antivirus service (clamd) is not installed."),
    "clamd_unreachable": N_("The antivirus service (clamd) does not answer."),
    "signatures_stale": N_("The antivirus signatures are out of date."),
    "signatures_unknown": N_("The date of the antivirus signatures is unknown."),
}


@dataclass
class Check:
    passing: bool | None
    reason: str = ""  # message id
    params: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # the agent's own words (technical, shown small)
    proof_event_id: str | None = None
    since: datetime | None = None  # when this result began (from ControlChange)


@dataclass
class SeatHealth:
    workstation: Workstation
    room: str | None
    checks: dict[str, Check]

    @property
    def failing(self) -> list[str]:
        return [k for k, c in self.checks.items() if c.passing is False]

    @property
    def failing_since(self) -> datetime | None:
        times = [c.since for c in self.checks.values() if c.passing is False and c.since]
        return min(times) if times else None

    def failing_long(self, now: datetime) -> bool:
        since = self.failing_since
        return since is not None and now - since > LONG_FAILING


@dataclass
class ControlSummary:
    control: Control
    passing: int
    failing: int
    unknown: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.passing / self.total) if self.total else 0


@dataclass
class Facts:
    """What the checks need beyond the workstation rows (four bounded queries)."""

    now: datetime
    policy_version: int | None
    full_scans: dict[str, tuple[str, datetime]]  # agent → (event id, when) newest full scan in 7 days
    baselines: dict[str, tuple[str, datetime]]  # agent → newest integrity.baseline (id, when)
    open_integrity: dict[str, int]  # agent → open integrity incidents
    lock_failures: dict[str, int]  # agent → idle.lock_failed in the last day


def _collector(ws: Workstation, name: str) -> dict | None:
    collectors = (ws.health or {}).get("collectors") or {}
    value = collectors.get(name)
    return value if isinstance(value, dict) else None


def _part_check(part: dict | None, *, missing: str, failing: str) -> Check | None:
    """None when the part is ok; else the failing/unknown check."""
    if part is None:
        return Check(None, missing)
    if part.get("state") != "ok":
        return Check(False, failing, detail=str(part.get("detail") or ""))
    return None


def evaluate(ws: Workstation, facts: Facts) -> dict[str, Check]:
    checks: dict[str, Check] = {}
    now = facts.now
    # reporting
    if ws.last_seen_at is None:
        checks["reporting"] = Check(False, N_("Never reported since enrolment."))
    elif now - ws.last_seen_at > SILENT_AFTER:
        minutes = int((now - ws.last_seen_at).total_seconds() // 60)
        checks["reporting"] = Check(
            False, N_("Silent for %(minutes)d min: check that it is on and connected."), {"minutes": minutes})
    else:
        checks["reporting"] = Check(True, N_("Heartbeat received."))
    # web filter with the current policy
    proxy = _collector(ws, "proxy")
    bad = _part_check(proxy, missing=N_("The web filter has not reported."),
                      failing=N_("The web filter is not working."))
    if bad:
        checks["filter"] = bad
    else:
        seat_version = (ws.health or {}).get("policy_version", ws.policy_version)
        if facts.policy_version and seat_version != facts.policy_version:
            checks["filter"] = Check(
                False, N_("Runs policy version %(seat)s; the current one is %(current)s."),
                {"seat": seat_version if seat_version is not None else "—", "current": facts.policy_version})
        else:
            checks["filter"] = Check(True, N_("Running with the current policy."))
    # antivirus: working, fresh signatures, a full scan within 7 days (000 §5.4)
    av = _collector(ws, "antivirus")
    if av is None:
        checks["antivirus"] = Check(None, N_("The antivirus part has not reported."))
    elif av.get("state") != "ok":
        detail = str(av.get("detail") or "")
        reason = next((text for code, text in AV_PROBLEMS.items() if code in detail),
                      N_("The antivirus part reports a problem."))
        checks["antivirus"] = Check(False, reason, detail=detail)
    else:
        scan = facts.full_scans.get(ws.id)
        if scan is None:
            checks["antivirus"] = Check(False, N_("No full scan in the last 7 days."))
        else:
            checks["antivirus"] = Check(True, N_("Working; last full scan %(when)s."), {"when": scan[1]},
                                        proof_event_id=scan[0])
    # integrity
    part = _collector(ws, "integrity")
    bad = _part_check(part, missing=N_("The integrity part has not reported."),
                      failing=N_("The integrity check reports a problem."))
    if bad:
        checks["integrity"] = bad
    elif ws.id not in facts.baselines:
        checks["integrity"] = Check(False, N_("No sealed baseline has reached the server yet."))
    elif facts.open_integrity.get(ws.id):
        checks["integrity"] = Check(False, N_("%(num)d unaccepted change(s): see Approvals."),
                                    {"num": facts.open_integrity[ws.id]})
    else:
        base = facts.baselines[ws.id]
        checks["integrity"] = Check(True, N_("Baseline sealed %(when)s; no open changes."), {"when": base[1]},
                                    proof_event_id=base[0])
    # USB
    bad = _part_check(_collector(ws, "usb"), missing=N_("The USB part has not reported."),
                      failing=N_("USB control is not enforced."))
    checks["usb"] = bad or Check(True, N_("Enforced."))
    # idle lock
    bad = _part_check(_collector(ws, "idle"), missing=N_("The idle lock has not reported."),
                      failing=N_("The idle lock is not working."))
    if bad:
        checks["idle"] = bad
    elif facts.lock_failures.get(ws.id):
        checks["idle"] = Check(False, N_("The screen failed to lock %(num)d time(s) in the last day."),
                               {"num": facts.lock_failures[ws.id]})
    else:
        checks["idle"] = Check(True, N_("Working."))
    # firewall (installed by the web filter part)
    if proxy is None:
        checks["firewall"] = Check(None, N_("The web filter has not reported."))
    elif "firewall" in str(proxy.get("detail") or "").lower() and proxy.get("state") != "ok":
        checks["firewall"] = Check(False, N_("The firewall redirect is not installed."),
                                   detail=str(proxy.get("detail") or ""))
    else:
        checks["firewall"] = Check(True, N_("Installed."))
    return checks


def gather_facts(db: Session, agent_ids: Iterable[str], *, now: datetime | None = None) -> Facts:
    from policy_server.policies.service import current_row

    now = now or utcnow()
    ids = list(agent_ids)
    row = current_row(db)
    full_scans: dict[str, tuple[str, datetime]] = {}
    baselines: dict[str, tuple[str, datetime]] = {}
    # The event queries stay on the type + time index for one seat too (an agent filter there
    # made SQLite walk that seat's whole year by the agent + time index); the few rows are
    # kept by agent here.  Incidents of one seat: by ix_incidents_agent_status.
    wanted = set(ids)
    only = (lambda column: column.in_(ids)) if 0 < len(ids) <= 5 else (lambda column: True)
    if ids:
        # The full scans of the last 7 days: a few per seat per week (type + time index).
        scans = db.execute(
            select(Event.id, Event.agent_id, Event.occurred_at, Event.data["kind"].as_string())
            .where(Event.type == "av.scan.completed", Event.occurred_at >= now - FULL_SCAN_WITHIN)
        ).all()
        for event_id, agent_id, when, kind in scans:
            if kind != "full" or agent_id not in wanted:
                continue
            if agent_id not in full_scans or full_scans[agent_id][1] < when:
                full_scans[agent_id] = (event_id, when)
        # The sealed baselines: a few per seat per month, read by the type + time index.  (A
        # GROUP BY agent here made SQLite walk the agent + time index over every event.)
        for event_id, agent_id, when in db.execute(
                select(Event.id, Event.agent_id, Event.occurred_at)
                .where(Event.type == "integrity.baseline")):
            if agent_id in wanted and (agent_id not in baselines or baselines[agent_id][1] < when):
                baselines[agent_id] = (event_id, when)
    open_integrity = dict(db.execute(  # index ix_incidents_status_rule (0104)
        select(Incident.agent_id, func.count()).where(Incident.status.in_(OPEN_STATUSES),
                                                      Incident.rule.like("integrity.%"),
                                                      Incident.agent_id.is_not(None), only(Incident.agent_id))
        .group_by(Incident.agent_id)).all())
    lock_failures = dict(db.execute(
        select(Event.agent_id, func.count()).where(Event.type == "idle.lock_failed",
                                                   Event.occurred_at >= now - LOCK_FAILURES_WITHIN)
        .group_by(Event.agent_id)).all())
    return Facts(now, row.version if row else None, full_scans, baselines, open_integrity, lock_failures)


def _latest_changes(db: Session, agent_ids: list[str]) -> dict[tuple[str, str], tuple[bool | None, datetime]]:
    """(agent, control) → (passing, since) of the newest change recorded (plain rows, no JSON)."""
    latest: dict[tuple[str, str], tuple[bool | None, datetime]] = {}
    if not agent_ids:
        return latest
    newest = (select(func.max(ControlChange.id)).where(ControlChange.agent_id.in_(agent_ids))
              .group_by(ControlChange.agent_id, ControlChange.control))
    for agent_id, control, passing, at in db.execute(
            select(ControlChange.agent_id, ControlChange.control, ControlChange.passing, ControlChange.at)
            .where(ControlChange.id.in_(newest))):
        latest[(agent_id, control)] = (passing, at)
    return latest


def record_changes(db: Session, seats: list[SeatHealth], *, now: datetime) -> int:
    """Add a `ControlChange` where a result differs from the last one recorded; fill `since`.

    The caller commits.  Returns the number of changes added."""
    latest = _latest_changes(db, [s.workstation.id for s in seats])
    added = 0
    for seat in seats:
        for key, check in seat.checks.items():
            last = latest.get((seat.workstation.id, key))
            if last is not None and last[0] == check.passing:
                check.since = last[1]
                continue
            db.add(ControlChange(agent_id=seat.workstation.id, control=key, passing=check.passing, at=now,
                                 detail={"reason": check.reason, "params": _plain(check.params)}))
            check.since = now if last is not None else (seat.workstation.last_seen_at or now)
            added += 1
    return added


def _plain(params: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}


def fleet(db: Session, *, now: datetime | None = None, room_id: int | None = None, record: bool = True
          ) -> tuple[list[ControlSummary], list[SeatHealth]]:
    """Every enrolled (not retired) workstation's checks and the per-control summary.

    Seats failing for more than a day come first, then other failing seats, then the rest."""
    now = now or utcnow()
    query = (select(Workstation, Room.name).outerjoin(Room, Room.id == Workstation.room_id)
             .where(Workstation.token_revoked.is_(False)))
    if room_id is not None:
        query = query.where(Workstation.room_id == room_id)
    rows = db.execute(query.order_by(Room.name, Workstation.seat, Workstation.hostname)).all()
    facts = gather_facts(db, [ws.id for ws, _ in rows], now=now)
    seats = [SeatHealth(ws, room, evaluate(ws, facts)) for ws, room in rows]
    if record:
        record_changes(db, seats, now=now)
    summaries = []
    for control in CONTROLS:
        results = [s.checks[control.key].passing for s in seats]
        summaries.append(ControlSummary(control, results.count(True), results.count(False),
                                        results.count(None), len(results)))
    far_past = datetime.min.replace(tzinfo=now.tzinfo)
    seats.sort(key=lambda s: (0 if s.failing_long(now) else 1 if s.failing else 2,
                              s.failing_since or far_past))
    return summaries, seats


def seat(db: Session, agent_id: str, *, now: datetime | None = None) -> SeatHealth | None:
    now = now or utcnow()
    found = db.execute(select(Workstation, Room.name).outerjoin(Room, Room.id == Workstation.room_id)
                       .where(Workstation.id == agent_id)).first()
    if found is None:
        return None
    ws, room = found
    facts = gather_facts(db, [ws.id], now=now)
    health = SeatHealth(ws, room, evaluate(ws, facts))
    if not ws.token_revoked:
        record_changes(db, [health], now=now)
    return health


def seat_history(db: Session, agent_id: str, *, limit: int = 40) -> list[ControlChange]:
    return list(db.scalars(select(ControlChange).where(ControlChange.agent_id == agent_id)
                           .order_by(ControlChange.id.desc()).limit(limit)))


def seat_incidents(db: Session, agent_id: str, *, limit: int = 20) -> list[Incident]:
    return list(db.scalars(select(Incident).where(Incident.agent_id == agent_id)
                           .order_by(Incident.last_seen_at.desc()).limit(limit)))


SEAT_EVENTS_DAYS = 30


def seat_events(db: Session, agent_id: str, *, limit: int = 30, now: datetime | None = None) -> list[Event]:
    """The seat's newest events of the last 30 days other than heartbeats (by the index on
    agent and time: at most a month of one seat's rows are looked at)."""
    since = (now or utcnow()) - timedelta(days=SEAT_EVENTS_DAYS)
    return list(db.scalars(select(Event).where(Event.agent_id == agent_id, Event.occurred_at >= since,
                                               Event.type != "agent.heartbeat")
                           .order_by(Event.occurred_at.desc()).limit(limit)))


RECORD_EVERY_S = 600


def fleet_jobs(settings) -> list:
    """The periodic job that notes control changes when nobody has the fleet page open (every
    10 minutes; off with the other periodic checks, `checks_interval_s` ≤ 0)."""
    from policy_server.checks.scheduler import Job

    if getattr(settings, "checks_interval_s", 0) <= 0:
        return []

    def run(db: Session, now: datetime) -> None:
        fleet(db, now=now, record=True)
        db.commit()

    return [Job(name="fleet.record_changes", interval_s=RECORD_EVERY_S, run=run)]
