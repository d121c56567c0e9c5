"""Batch ingest of agent events, the server's hot path.

`ingest_batch` validates every event on its own (one bad event never blocks the others),
stores the good ones with a single bulk `INSERT … ON CONFLICT (id) DO NOTHING RETURNING id`
(the same statement on SQLite and PostgreSQL), and answers per event: accepted (stored
now), duplicate (an id already stored, by an earlier post, a concurrent post, or twice in
this batch), rejected (with a message).  Ids that the INSERT did not return were stored
before: that is what makes "stored once, forever" hold across restarts and races, because
the database's primary key decides, not a cache.

Then, in the same transaction: heartbeats update the workstation row, `isuo.session`
events fill the ISUO access log, and the incident engine runs the rules on the accepted
events.  The caller commits; if anything fails, nothing of the batch is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import Event, IsuoAccess, Room, Workstation, utcnow
from policy_server.incidents.engine import process_events
from policy_server.rules import RuleInput

_INSERT_CHUNK = 500  # rows per INSERT statement (SQLite allows 32766 bound parameters)


@dataclass
class ValidEvent:
    row: dict[str, Any]  # the `events` row to insert
    typed: protocol._Data


def _event_id_of(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("id")
        return str(value)[:64] if value is not None else None
    return None


def validate_event(item: Any, index: int, agent_id: str, received_at: datetime) -> ValidEvent | str:
    """The row to store, or a message saying what is wrong with event number `index`."""
    if not isinstance(item, dict):
        return f"event #{index} is not a JSON object"
    try:
        envelope = protocol.EventEnvelope.model_validate(item)
        typed = envelope.typed_data()
    except protocol.UnknownEventType as exc:
        return str(exc)
    except ValidationError as exc:
        return f"event #{index} ({item.get('type', 'no type')}): {protocol.validation_message(exc)}"
    subject = envelope.subject
    clauses = envelope.clauses or list(protocol.EVENT_TYPES[envelope.type][1])
    return ValidEvent(
        row={
            "id": str(envelope.id), "agent_id": agent_id, "type": envelope.type,
            "occurred_at": envelope.occurred_at, "received_at": received_at,
            "os_user": subject.os_user if subject else None, "seat": subject.seat if subject else None,
            "data": typed.model_dump(mode="json"), "clauses": clauses,
        },
        typed=typed,
    )


def _insert_new(db: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert rows whose id is new; return the ids actually inserted."""
    dialect = db.get_bind().dialect.name
    table = Event.__table__
    stmt_factory = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect, insert)
    inserted: set[str] = set()
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start:start + _INSERT_CHUNK]
        stmt = stmt_factory(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
        # One multi-row VALUES statement per chunk ("insertmanyvalues"), not one per row.
        inserted.update(db.execute(stmt, chunk).scalars())
    return inserted


def ingest_batch(db: Session, *, agent: Workstation, items: list[Any]) -> protocol.BatchResult:
    result = protocol.BatchResult()
    now = utcnow()
    valid: list[ValidEvent] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        checked = validate_event(item, index, agent.id, now)
        if isinstance(checked, str):
            result.rejected.append(protocol.RejectedEvent(id=_event_id_of(item), error=checked))
            continue
        event_id = checked.row["id"]
        if event_id in seen:
            result.duplicates.append(event_id)
            continue
        seen.add(event_id)
        valid.append(checked)

    inserted = _insert_new(db, [v.row for v in valid]) if valid else set()
    accepted = [v for v in valid if v.row["id"] in inserted]
    result.accepted = [v.row["id"] for v in accepted]
    result.duplicates.extend(v.row["id"] for v in valid if v.row["id"] not in inserted)

    agent.last_seen_at = now
    _apply_side_effects(db, agent, accepted)
    if accepted:
        room = db.scalar(select(Room.name).where(Room.id == agent.room_id)) if agent.room_id else None
        process_events(db, [_rule_input(v, agent, room) for v in accepted])
    return result


def _rule_input(v: ValidEvent, agent: Workstation, room: str | None) -> RuleInput:
    row = v.row
    return RuleInput(
        event_id=row["id"], type=row["type"], agent_id=agent.id, occurred_at=row["occurred_at"],
        data=row["data"], clauses=tuple(row["clauses"]), os_user=row["os_user"],
        seat=row["seat"] or agent.seat, room=room, hostname=agent.hostname,
    )


def _apply_side_effects(db: Session, agent: Workstation, accepted: list[ValidEvent]) -> None:
    heartbeats = [v for v in accepted if v.row["type"] == "agent.heartbeat"]
    if heartbeats:
        newest = max(heartbeats, key=lambda v: v.row["occurred_at"])
        beat: protocol.Heartbeat = newest.typed  # type: ignore[assignment]
        agent.health = {**newest.row["data"], "reported_at": newest.row["occurred_at"].isoformat()}
        agent.policy_version = beat.policy_version
        if beat.agent_version:
            agent.agent_version = beat.agent_version[:32]
        agent.protocol_version = beat.protocol_version
    for v in accepted:
        if v.row["type"] == "isuo.session":
            _record_isuo(db, agent, v)


def _record_isuo(db: Session, agent: Workstation, v: ValidEvent) -> None:
    """Join an ISUO session's start and end into one `IsuoAccess` row (000 §6.8)."""
    session: protocol.IsuoSession = v.typed  # type: ignore[assignment]
    row = v.row
    if session.state == "start":
        db.add(IsuoAccess(source="proxy", agent_id=agent.id, seat=row["seat"] or agent.seat,
                          os_user=row["os_user"], host=session.host, started_at=session.started_at,
                          start_event_id=row["id"]))
        db.flush()
        return
    db.flush()  # a start earlier in this batch must be visible to the query below
    open_access = db.scalar(
        select(IsuoAccess)
        .where(IsuoAccess.agent_id == agent.id, IsuoAccess.host == session.host,
               IsuoAccess.ended_at.is_(None), IsuoAccess.started_at <= session.started_at)
        .order_by(IsuoAccess.started_at.desc()).limit(1)
    )
    ended = session.ended_at or row["occurred_at"]
    if open_access is None:  # the start never arrived (dropped or made before enrolment)
        db.add(IsuoAccess(source="proxy", agent_id=agent.id, seat=row["seat"] or agent.seat,
                          os_user=row["os_user"], host=session.host, started_at=session.started_at,
                          ended_at=ended))
    else:
        open_access.ended_at = ended
