"""Batch ingest of agent events, the server's hot path: validate → store → rules.

`ingest_batch` (= `check_batch`, pure, then `store_batch` in the caller's transaction)
answers per event: accepted (stored now), duplicate (an id already stored, by an earlier
post, a concurrent post, or twice in this batch), rejected (with a message).  One bad event
never blocks the others (`validation.validate_batch`).  The database's primary key decides
what is a duplicate (`store.insert_new_events`), not a cache: that is what makes "stored
once, forever" hold across restarts and races.

Then, in the same transaction: heartbeats update the workstation row, `isuo.session`
events fill the ISUO access log, and the incident engine runs the rules on the accepted
events of the types that have rules, and `checks.stateful` runs the checks that need stored
state on the few event types that have them.  The caller commits; if anything fails, nothing of the
batch is stored.

`store_isolating` is what the API calls: one transaction for the whole batch (the fast
path, unchanged); only if that fails for a reason other than the database itself being
unavailable (`is_unavailable`: disk full, connection lost, locked), the batch is stored in
halves, recursively, each in its own transaction, so the event that makes the server fail
is found in O(log n) transactions, answered "rejected" alone, and the rest stored.  If the
database fails meanwhile, the error propagates (503): the halves already committed come
back as duplicates when the agent retries, so nothing is lost or stored twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policy_server import protocol
from policy_server.agents.binding import identity_claims, mismatch_drafts
from policy_server.checks.stateful import INGEST_CHECK_TYPES, run_ingest_checks
from policy_server.db.models import IsuoAccess, Room, Workstation, utcnow
from policy_server.db.session import is_sqlite
from policy_server.errors import KalkanError
from policy_server.events.store import insert_new_events
from policy_server.events.validation import ValidEvent, validate_batch
from policy_server.health.service import is_unavailable, short_error
from policy_server.incidents.engine import process_drafts, process_events
from policy_server.lessons.activity import LESSON_ONLY_TYPES
from policy_server.lessons.activity import record_from_events as record_lesson_activity
from policy_server.rules import RULES, RuleInput

log = logging.getLogger("kalkan.server.ingest")


def _event_id_of(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("id")
        return str(value)[:64] if value is not None else None
    return None


@dataclass
class CheckedBatch:
    """A batch after validation, before storage: what to store, and the answers so far."""

    valid: list[ValidEvent]
    result: protocol.BatchResult  # rejected events and ids repeated inside the batch


def check_batch(items: list[Any]) -> CheckedBatch:
    """Validate a batch (pure: no database, so it runs outside the write transaction)."""
    result = protocol.BatchResult()
    valid: list[ValidEvent] = []
    seen: set[str] = set()
    for item, checked in zip(items, validate_batch(items), strict=True):
        if isinstance(checked, str):
            result.rejected.append(protocol.RejectedEvent(id=_event_id_of(item), error=checked))
        elif checked.id in seen:
            result.duplicates.append(checked.id)
        else:
            seen.add(checked.id)
            valid.append(checked)
    return CheckedBatch(valid=valid, result=result)


def store_batch(db: Session, *, agent: Workstation, checked: CheckedBatch) -> protocol.BatchResult:
    """Store the new events, apply their side effects and rules; the caller commits."""
    now = utcnow()
    result = protocol.BatchResult(duplicates=list(checked.result.duplicates),
                                  rejected=list(checked.result.rejected))
    # lesson-time activity goes to the running lesson only, never into `events` (001 §2.15)
    lesson_only = [v for v in checked.valid if v.type in LESSON_ONLY_TYPES]
    to_store = [v for v in checked.valid if v.type not in LESSON_ONLY_TYPES] if lesson_only else checked.valid
    inserted = insert_new_events(db, agent_id=agent.id, received_at=now, events=to_store,
                                 seat=agent.seat)
    inserted = set(inserted) | {v.id for v in lesson_only}
    accepted = [v for v in checked.valid if v.id in inserted]
    result.accepted = [v.id for v in accepted]
    result.duplicates.extend(v.id for v in checked.valid if v.id not in inserted)

    agent.last_seen_at = now
    _apply_side_effects(db, agent, accepted)
    record_lesson_activity(db, agent, accepted)  # blocked/requests/alerts to a running lesson's teacher
    with_rules = [v for v in accepted if v.type in RULES]
    # checks that need stored state (baseline chain, ISUO in a student lab): rare event types
    with_checks = [v for v in accepted if v.type in INGEST_CHECK_TYPES]
    claims = identity_claims(agent, accepted)  # a seat or hostname other than the enrolled one
    if with_rules or with_checks or claims:
        room = db.scalar(select(Room.name).where(Room.id == agent.room_id)) if agent.room_id else None
        if with_rules:
            process_events(db, [rule_input(v, agent, room) for v in with_rules])
        if with_checks:
            run_ingest_checks(db, events=[rule_input(v, agent, room) for v in with_checks])
        if claims:
            process_drafts(db, mismatch_drafts(agent, room, claims))
    return result


def ingest_batch(db: Session, *, agent: Workstation, items: list[Any]) -> protocol.BatchResult:
    """Validate, store and run the rules on one batch (the caller commits)."""
    return store_batch(db, agent=agent, checked=check_batch(items))


def store_isolating(sessions: sessionmaker[Session], *, agent_id: str,
                    checked: CheckedBatch) -> protocol.BatchResult:
    """Store a checked batch (committed); an event the server cannot store is refused alone."""
    try:
        return _store_committed(sessions, agent_id, checked)
    except Exception as exc:
        if isinstance(exc, IngestBusy) or is_unavailable(exc) or not checked.valid:
            raise
        log.warning("a batch of %d events failed to store (%s); storing it in parts to find the "
                    "event at fault", len(checked.valid), short_error(exc))
    result = protocol.BatchResult(duplicates=list(checked.result.duplicates),
                                  rejected=list(checked.result.rejected))
    _store_parts(sessions, agent_id, checked.valid, result)
    return result


# SQLite has one writer; a thread that finds the write lock taken polls for it (SQLite's
# busy handler sleeps 1…100 ms between tries), so with several batches in flight the database
# sat idle between one commit and the next waiter's wake-up, and a waiter could lose to newer
# ones again and again.  Batches of this process queue here instead and the next one starts
# the moment the last commits (benchmarks/chaos/RESULTS.md "Where the drain time went").
_SQLITE_INGEST = threading.Lock()
# A batch waits this long for its turn, then is answered 503 with a short Retry-After instead:
# the agent's read timeout (agent/uplink.py EVENTS_TIMEOUT_S, 60 s) is longer than this wait
# plus a batch's own time, so an agent never gives up on a batch the server then stores anyway
# (and sends it again, to be stored "duplicate" after another wait in the queue).
INGEST_WAIT_S = 20.0
BUSY_RETRY_AFTER_S = 1


class IngestBusy(KalkanError):
    """503: the batches ahead of this one keep the database busy; send it again in a second."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__(f"the server is storing other workstations' batches; nothing of this one was "
                         f"stored: send it again in {BUSY_RETRY_AFTER_S} s")
        self.headers = {"Retry-After": str(BUSY_RETRY_AFTER_S), "Cache-Control": "no-store"}


def _store_committed(sessions: sessionmaker[Session], agent_id: str,
                     checked: CheckedBatch) -> protocol.BatchResult:
    with sessions() as db:
        queue = _SQLITE_INGEST if is_sqlite(db) else None
        if queue is not None and not queue.acquire(timeout=INGEST_WAIT_S):
            raise IngestBusy()
        try:
            agent = db.get(Workstation, agent_id)
            result = store_batch(db, agent=agent, checked=checked)
            db.commit()
        finally:
            if queue is not None:
                queue.release()
    return result


def _store_parts(sessions: sessionmaker[Session], agent_id: str, valid: list[ValidEvent],
                 result: protocol.BatchResult) -> None:
    try:
        part = _store_committed(sessions, agent_id,
                                CheckedBatch(valid=valid, result=protocol.BatchResult()))
    except Exception as exc:
        if isinstance(exc, IngestBusy) or is_unavailable(exc):
            raise
        if len(valid) == 1:
            event = valid[0]
            log.warning("event %s (%s) refused alone: the server failed to store it (%s)",
                        event.id, event.type, short_error(exc))
            result.rejected.append(protocol.RejectedEvent(
                id=event.id, error=f"the server could not store this event ({short_error(exc)}); it was "
                                   "refused alone and the rest of its batch stored: report it to "
                                   "the Kalkan developers with the event"))
            return
        middle = len(valid) // 2
        _store_parts(sessions, agent_id, valid[:middle], result)
        _store_parts(sessions, agent_id, valid[middle:], result)
        return
    result.accepted.extend(part.accepted)
    result.duplicates.extend(part.duplicates)


def rule_input(v: ValidEvent, agent: Workstation, room: str | None) -> RuleInput:
    return RuleInput(
        event_id=v.id, type=v.type, agent_id=agent.id, occurred_at=v.occurred_at, data=v.data,
        clauses=tuple(v.clauses), os_user=v.os_user, seat=agent.seat, room=room,
        hostname=agent.hostname,
    )


def _apply_side_effects(db: Session, agent: Workstation, accepted: list[ValidEvent]) -> None:
    heartbeats = [v for v in accepted if v.type == "agent.heartbeat"]
    if heartbeats:
        newest = max(heartbeats, key=lambda v: v.occurred_at)
        beat: protocol.Heartbeat = newest.typed  # type: ignore[assignment]
        agent.health = {**newest.data, "reported_at": newest.occurred_at.isoformat()}
        agent.policy_version = beat.policy_version
        if beat.agent_version:
            agent.agent_version = beat.agent_version[:32]
        agent.protocol_version = beat.protocol_version
    for v in accepted:
        if v.type == "isuo.session":
            _record_isuo(db, agent, v)


def _record_isuo(db: Session, agent: Workstation, v: ValidEvent) -> None:
    """Join an ISUO session's start and end into one `IsuoAccess` row (000 §6.8)."""
    session: protocol.IsuoSession = v.typed  # type: ignore[assignment]
    if session.state == "start":
        db.add(IsuoAccess(source="proxy", agent_id=agent.id, seat=agent.seat,
                          os_user=v.os_user, host=session.host, started_at=session.started_at,
                          start_event_id=v.id))
        db.flush()
        return
    db.flush()  # a start earlier in this batch must be visible to the query below
    open_access = db.scalar(
        select(IsuoAccess)
        .where(IsuoAccess.agent_id == agent.id, IsuoAccess.host == session.host,
               IsuoAccess.ended_at.is_(None), IsuoAccess.started_at <= session.started_at)
        .order_by(IsuoAccess.started_at.desc()).limit(1)
    )
    ended = session.ended_at or v.occurred_at
    if open_access is None:  # the start never arrived (dropped or made before enrolment)
        db.add(IsuoAccess(source="proxy", agent_id=agent.id, seat=agent.seat,
                          os_user=v.os_user, host=session.host, started_at=session.started_at,
                          ended_at=ended))
    else:
        open_access.ended_at = ended
