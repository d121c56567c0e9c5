"""Rolling agent upgrades (docs/operations.md "Upgrading seats from the console").

The responsible person starts a rollout of a package version the server's apt repository holds
(`operations.apt_repo.versions`).  Each agent asks `GET /api/v1/upgrade` when the push channel
says a rollout started (`event: upgrade`, after a random wait of up to 20 s so that a whole
district does not ask in the same second) and otherwise every 15 minutes; with many seats those
polls come every few seconds in all, so a slot a seat frees is soon taken by the next.  `offer_for`
answers with the version only when

* fewer than `batch_size` seats of the rollout are upgrading now (offered, no result yet, offered
  less than `OFFER_TIMEOUT` ago): a few at a time, in the order the seats ask;
* no lesson runs in the seat's room (`lessons.service.running_in_room`): never during a lesson;
* the seat has no result in this rollout yet (a seat that failed is not asked again: the person
  reads why and starts a new rollout when it is fixed).

The agent upgrades through the package manager, rolls back to the version it had when the new
one fails to install or to start, and reports (`record_result`, and an `agent.upgrade` event in
its history).  A seat that was offered and never answered within `OFFER_TIMEOUT` counts as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Workstation, utcnow
from policy_server.errors import KalkanError, NotFound
from policy_server.policies.push import schedule_upgrade_push
from policy_server.upgrades.models import Rollout, RolloutSeat

OFFER_TIMEOUT = timedelta(minutes=15)
RESULT_STATES = ("upgraded", "rolled_back", "failed")
MAX_BATCH = 50
REASON_CODES = ("fetch_failed", "install_failed", "not_running", "rollback_failed", "no_answer")


@dataclass
class Offer:
    rollout: int
    version: str

    def as_dict(self) -> dict:
        return {"rollout": self.rollout, "version": self.version}


def current_rollout(db: Session) -> Rollout | None:
    return db.scalar(select(Rollout).where(Rollout.status == "running").order_by(Rollout.id.desc()))


def latest_rollout(db: Session) -> Rollout | None:
    return db.scalar(select(Rollout).order_by(Rollout.id.desc()))


def start_rollout(db: Session, *, actor: str, version: str, batch_size: int, available: list[str]) -> Rollout:
    if version not in available:
        raise KalkanError(f"version {version!r} is not in this server's agent packages "
                          f"({', '.join(available) or 'none'})",
                          code="upgrade.unknown_version", params={"version": version})
    if not 1 <= batch_size <= MAX_BATCH:
        raise KalkanError(f"seats at a time must be 1 to {MAX_BATCH}", code="upgrade.bad_batch",
                          params={"max": MAX_BATCH})
    for running in db.scalars(select(Rollout).where(Rollout.status == "running")):
        running.status, running.finished_at = "stopped", utcnow()
    rollout = Rollout(version=version, batch_size=batch_size, status="running", created_by=actor)
    db.add(rollout)
    db.flush()
    audit(db, actor=actor, action="upgrade.start", target=version,
          detail={"rollout": rollout.id, "batch_size": batch_size})
    schedule_upgrade_push(db)  # every connected agent asks now (after its jitter), not at its next poll
    return rollout


def stop_rollout(db: Session, *, actor: str, rollout_id: int) -> Rollout:
    rollout = db.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}", code="upgrade.not_found", params={"id": rollout_id})
    if rollout.status == "running":
        rollout.status, rollout.finished_at = "stopped", utcnow()
        audit(db, actor=actor, action="upgrade.stop", target=rollout.version, detail={"rollout": rollout.id})
    return rollout


def _in_flight(db: Session, rollout: Rollout, now: datetime) -> int:
    return db.scalar(select(func.count()).select_from(RolloutSeat).where(
        RolloutSeat.rollout_id == rollout.id, RolloutSeat.state == "offered",
        RolloutSeat.offered_at > now - OFFER_TIMEOUT)) or 0


def _expire(db: Session, rollout: Rollout, now: datetime) -> None:
    for row in db.scalars(select(RolloutSeat).where(
            RolloutSeat.rollout_id == rollout.id, RolloutSeat.state == "offered",
            RolloutSeat.offered_at <= now - OFFER_TIMEOUT)):
        row.state, row.finished_at, row.reason_code = "failed", now, "no_answer"
        row.reason = f"{int(OFFER_TIMEOUT.total_seconds() // 60)} min"


def offer_for(db: Session, agent: Workstation, *, now: datetime | None = None) -> Offer | None:
    """The upgrade this agent should run now, or None (see the module's rules)."""
    from policy_server.lessons.service import running_in_room

    now = now or utcnow()
    rollout = current_rollout(db)
    if rollout is None:
        return None
    _expire(db, rollout, now)
    row = db.scalar(select(RolloutSeat).where(RolloutSeat.rollout_id == rollout.id,
                                              RolloutSeat.agent_id == agent.id))
    if row is not None:  # asked again before it reported (e.g. the agent restarted): the same order
        return Offer(rollout.id, rollout.version) if row.state == "offered" else None
    if _in_flight(db, rollout, now) >= rollout.batch_size:
        return None
    if agent.room_id is not None and running_in_room(db, agent.room_id, now) is not None:
        return None
    db.add(RolloutSeat(rollout_id=rollout.id, agent_id=agent.id, state="offered", offered_at=now,
                       from_version=(agent.agent_version or "")[:64]))
    db.flush()
    return Offer(rollout.id, rollout.version)


def record_result(db: Session, agent: Workstation, *, rollout_id: int, state: str, from_version: str,
                  to_version: str, reason: str, reason_code: str = "",
                  now: datetime | None = None) -> RolloutSeat:
    if state not in RESULT_STATES:
        raise KalkanError(f"state must be one of {', '.join(RESULT_STATES)}", code="upgrade.bad_state")
    now = now or utcnow()
    row = db.scalar(select(RolloutSeat).where(RolloutSeat.rollout_id == rollout_id,
                                              RolloutSeat.agent_id == agent.id))
    if row is None:
        raise NotFound(f"this seat was not offered rollout {rollout_id}", code="upgrade.not_offered",
                       params={"id": rollout_id})
    row.state, row.finished_at, row.reason = state, now, reason[:500]
    row.reason_code = reason_code if reason_code in REASON_CODES else ""
    if from_version:
        row.from_version = from_version[:64]
    rollout = db.get(Rollout, rollout_id)
    if rollout is not None and rollout.status == "running":
        seats = db.scalar(select(func.count()).select_from(Workstation).where(
            Workstation.token_revoked.is_(False))) or 0
        finished = db.scalar(select(func.count()).select_from(RolloutSeat).where(
            RolloutSeat.rollout_id == rollout_id, RolloutSeat.state.in_(RESULT_STATES))) or 0
        if finished >= seats:
            rollout.status, rollout.finished_at = "done", now
    return row


@dataclass
class SeatRow:
    seat: str
    room: str
    state: str  # waiting | offered | upgraded | rolled_back | failed
    from_version: str
    reason: str
    finished_at: datetime | None
    reason_code: str = ""


def rollout_seats(db: Session, rollout: Rollout) -> list[SeatRow]:
    """Every enrolled seat and where it is in the rollout (failures first)."""
    rows = {r.agent_id: r
            for r in db.scalars(select(RolloutSeat).where(RolloutSeat.rollout_id == rollout.id))}
    out = []
    for ws in db.scalars(select(Workstation).where(Workstation.token_revoked.is_(False))):
        r = rows.get(ws.id)
        out.append(SeatRow(ws.seat or ws.hostname, ws.room.name if ws.room is not None else "",
                           r.state if r else "waiting", r.from_version if r else (ws.agent_version or ""),
                           r.reason if r else "", r.finished_at if r else None, r.reason_code if r else ""))
    order = {"failed": 0, "rolled_back": 1, "offered": 2, "waiting": 3, "upgraded": 4}
    return sorted(out, key=lambda s: (order.get(s.state, 9), s.room, s.seat))


def failed_seats(db: Session) -> list[SeatRow]:
    """The latest rollout's seats that failed or rolled back (the fleet page lists them)."""
    rollout = latest_rollout(db)
    if rollout is None:
        return []
    return [s for s in rollout_seats(db, rollout) if s.state in ("failed", "rolled_back")]
