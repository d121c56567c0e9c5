"""Checks run periodically: what can only be seen as an absence, or once time has passed.

* `check_overdue_full_scans` (000 §5.4): every enrolled, non-revoked workstation needs a
  completed full antivirus scan each week.  An absence: no event will ever announce it.
* `check_storage_during_isuo` (000 §6.5): a USB storage device at a seat during an ISUO
  session or within 10 minutes after it.  Periodic because the two kinds of events arrive
  in any order, in different uploads, and the "after" window closes only 10 minutes later.
* `check_isuo_left_unlocked` (000 §6.8): an ISUO session that ended with no lock within
  2 minutes.  An absence again, judged only once the agent has reported past the deadline.

Each function is keyword-only over a session, returns the drafts it handed to the incident
engine (after dropping those already reported), and never commits: the caller does
(`run_periodic_checks`, the scheduler, `kalkan-server run-checks`).  Running them twice in
a row adds nothing: each draft's dedup key is looked up first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from policy_server.db.models import Event, Incident, IncidentStatus, IsuoAccess, Room, Workstation
from policy_server.incidents.engine import process_drafts
from policy_server.rules import IncidentDraft, RuleInput
from policy_server.rules.antivirus import overdue_full_scans
from policy_server.rules.isuo import STORAGE_AFTER, IsuoVisit, left_unlocked, storage_during_isuo

log = logging.getLogger("kalkan.checks")

WEEK = timedelta(days=7)
# How far back the ISUO checks look at sessions: an agent that was offline for a weekend
# still gets its sessions checked when it comes back and uploads.
ISUO_LOOKBACK = timedelta(days=3)
USB_TYPES = ("usb.connected", "usb.allowed")


# ----------------------------------------------------------------------------- helpers


def _already_reported(db: Session, keys: set[str], *, open_at: datetime | None) -> set[str]:
    """Keys that need no new draft.  `open_at` given: an unresolved incident whose window
    reaches it (the weekly scan: one incident a week, not one more count every hour).
    None: any incident at all (per-session ISUO keys are reported once, ever)."""
    if not keys:
        return set()
    query = select(Incident.dedup_key).where(Incident.dedup_key.in_(sorted(keys)))
    if open_at is not None:
        query = query.where(Incident.status != IncidentStatus.resolved, Incident.window_ends_at >= open_at)
    return set(db.scalars(query))


def _submit(db: Session, drafts: list[tuple[IncidentDraft, RuleInput]], *,
            open_at: datetime | None) -> list[IncidentDraft]:
    done = _already_reported(db, {d.dedup_key for d, _ in drafts}, open_at=open_at)
    fresh = [(d, e) for d, e in drafts if d.dedup_key not in done]
    if fresh:
        process_drafts(db, fresh)
    return [d for d, _ in fresh]


@dataclass(frozen=True)
class _Seat:
    agent_id: str
    seat: str | None
    hostname: str
    room: str | None

    @property
    def where(self) -> str:
        return self.seat or self.hostname or self.agent_id


def _seats(db: Session, agent_ids: set[str]) -> dict[str, _Seat]:
    if not agent_ids:
        return {}
    rows = db.execute(
        select(Workstation.id, Workstation.seat, Workstation.hostname, Room.name)
        .outerjoin(Room, Room.id == Workstation.room_id)
        .where(Workstation.id.in_(sorted(agent_ids)))
    )
    return {a: _Seat(a, seat, host, room) for a, seat, host, room in rows}


def _absence(seat: _Seat, *, now: datetime, kind: str, event_id: str = "",
             os_user: str | None = None) -> RuleInput:
    """The RuleInput that carries an absence to the engine (agent, seat, time; no event linked
    unless `event_id` names one)."""
    return RuleInput(event_id=event_id, type=kind, agent_id=seat.agent_id, occurred_at=now, data={},
                     os_user=os_user, seat=seat.seat, room=seat.room, hostname=seat.hostname)


# ----------------------------------------------------------------------------- weekly scan


def last_full_scans(db: Session) -> dict[str, datetime | None]:
    """Every enrolled, non-revoked workstation → its last completed full scan (None: never)."""
    scans = dict(db.execute(
        select(Event.agent_id, func.max(Event.occurred_at))
        .where(Event.type == "av.scan.completed", Event.data["kind"].as_string() == "full")
        .group_by(Event.agent_id)
    ).all())
    agents = db.scalars(select(Workstation.id).where(Workstation.token_revoked.is_(False)))
    return {agent_id: scans.get(agent_id) for agent_id in agents}


def check_overdue_full_scans(db: Session, *, now: datetime, max_age: timedelta = WEEK) -> list[IncidentDraft]:
    """Workstations with no completed full scan for `max_age` → one incident a week each.

    A workstation enrolled less than `max_age` ago and never scanned is not late yet: its
    first weekly scan may still be due."""
    last = last_full_scans(db)
    enrolled = dict(db.execute(select(Workstation.id, Workstation.enrolled_at)
                               .where(Workstation.id.in_(sorted(last)))).all()) if last else {}
    late = {a: t for a, t in last.items() if t is not None or now - enrolled[a] > max_age}
    seats = _seats(db, set(late))
    drafts = overdue_full_scans(late, now=now, max_age=max_age,
                                names={a: s.where for a, s in seats.items()})
    return _submit(db, [(d, _absence(seats[d.params["agent_id"]], now=now, kind="av.full_scan_overdue"))
                        for d in drafts], open_at=now)


# ----------------------------------------------------------------------------- ISUO


def recent_isuo_visits(db: Session, *, now: datetime, lookback: timedelta = ISUO_LOOKBACK) -> list[IsuoVisit]:
    """ISUO sessions of workstations that ended (or, still open, started) within `lookback`."""
    since = now - lookback
    rows = db.scalars(
        select(IsuoAccess)
        .where(IsuoAccess.agent_id.is_not(None),
               or_(IsuoAccess.ended_at >= since,
                   IsuoAccess.ended_at.is_(None) & (IsuoAccess.started_at >= since)))
        .order_by(IsuoAccess.id)
    )
    return [IsuoVisit(access_id=r.id, agent_id=r.agent_id, host=r.host, started_at=r.started_at,
                      ended_at=r.ended_at, seat=r.seat, os_user=r.os_user, start_event_id=r.start_event_id)
            for r in rows]


def check_storage_during_isuo(db: Session, *, now: datetime,
                              lookback: timedelta = ISUO_LOOKBACK) -> list[IncidentDraft]:
    """USB storage connected or allowed at a seat during an ISUO session or 10 minutes after."""
    visits = recent_isuo_visits(db, now=now, lookback=lookback)
    seats = _seats(db, {v.agent_id for v in visits})
    drafts: list[tuple[IncidentDraft, RuleInput]] = []
    for visit in visits:
        until = visit.ended_at + STORAGE_AFTER if visit.ended_at else now
        rows = db.execute(
            select(Event.id, Event.type, Event.occurred_at, Event.data, Event.os_user, Event.seat)
            .where(Event.agent_id == visit.agent_id, Event.type.in_(USB_TYPES),
                   Event.occurred_at >= visit.started_at, Event.occurred_at <= until)
            .order_by(Event.occurred_at)
        )
        seat = seats[visit.agent_id]
        for event_id, type_, at, data, os_user, event_seat in rows:
            usb = RuleInput(event_id=event_id, type=type_, agent_id=visit.agent_id, occurred_at=at, data=data,
                            os_user=os_user, seat=event_seat or seat.seat, room=seat.room,
                            hostname=seat.hostname)
            draft = storage_during_isuo(visit, usb)
            if draft is not None:
                drafts.append((draft, usb))
    return _submit(db, drafts, open_at=None)


def check_isuo_left_unlocked(db: Session, *, now: datetime,
                             lookback: timedelta = ISUO_LOOKBACK) -> list[IncidentDraft]:
    """ISUO sessions that ended with no lock of the workstation within 2 minutes."""
    visits = [v for v in recent_isuo_visits(db, now=now, lookback=lookback) if v.ended_at is not None]
    seats = _seats(db, {v.agent_id for v in visits})
    drafts: list[tuple[IncidentDraft, RuleInput]] = []
    reported_until: dict[str, datetime | None] = {}
    for visit in visits:
        if visit.agent_id not in reported_until:
            reported_until[visit.agent_id] = db.scalar(
                select(func.max(Event.occurred_at)).where(Event.agent_id == visit.agent_id))
        locks = db.scalars(
            select(Event.occurred_at)
            .where(Event.agent_id == visit.agent_id, Event.type == "idle.locked",
                   Event.occurred_at >= visit.ended_at - timedelta(minutes=1),
                   Event.occurred_at <= visit.ended_at + timedelta(minutes=5))
        ).all()
        seat = seats[visit.agent_id]
        draft = left_unlocked(visit, locks, now=now, reported_until=reported_until[visit.agent_id],
                              where=seat.where)
        if draft is not None:
            drafts.append((draft, _absence(seat, now=visit.ended_at, kind="isuo.unlocked",
                                           event_id=visit.start_event_id or "", os_user=visit.os_user)))
    return _submit(db, drafts, open_at=None)


# ----------------------------------------------------------------------------- all of them

PeriodicCheck = Callable[..., list[IncidentDraft]]

def check_isuo_cross(db: Session, *, now: datetime) -> list[IncidentDraft]:
    """The ISUO register's cross-checks over the last days (policy_server/isuo/checks.py)."""
    from policy_server.isuo.checks import run_periodic

    return run_periodic(db, now=now)


PERIODIC_CHECKS: dict[str, PeriodicCheck] = {
    "av.full_scan_overdue": check_overdue_full_scans,
    "isuo.storage": check_storage_during_isuo,
    "isuo.unlocked": check_isuo_left_unlocked,
    "isuo.cross": check_isuo_cross,
}


def run_check(db: Session, name: str, *, now: datetime) -> int:
    """Run one periodic check in its own transaction; returns how many new drafts it made."""
    try:
        drafts = PERIODIC_CHECKS[name](db, now=now)
        db.commit()
    except Exception:
        db.rollback()
        raise
    return len(drafts)
