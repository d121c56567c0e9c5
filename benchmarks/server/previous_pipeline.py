"""The first pass's ingest pipeline, frozen here as the benchmark's side-by-side baseline.

A verbatim copy of `policy_server/events/ingest.py` and `policy_server/incidents/engine.py` as
they were at commit 5897ecc (per-event pydantic validation, SQLAlchemy multi-row
`INSERT … ON CONFLICT DO NOTHING RETURNING`, ORM incident engine), so that
`benchmarks/server/ingest.py` measures the old and the new code in the same run on the
same machine.  Not used by the server.
"""
# ruff: noqa
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
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import (
    Incident,
    IncidentEvent,
    IncidentStatus,
    Notification,
    Person,
    TimelineEntry,
    utcnow,
)
from policy_server.rules import IncidentDraft, RuleInput, Severity, evaluate, load_all_rules

SYSTEM = "system"
_SEVERITY_RANK = {s.value: i for i, s in enumerate(Severity)}

load_all_rules()


def _max_severity(a: str, b: str) -> str:
    return a if _SEVERITY_RANK.get(a, 0) >= _SEVERITY_RANK.get(b, 0) else b


class _BundleCache:
    """The policy bundle, read at most once per batch and only if a draft needs it."""

    def __init__(self, db: Session):
        self.db = db
        self._bundle: protocol.PolicyBundle | None = None

    def get(self) -> protocol.PolicyBundle:
        if self._bundle is None:
            from policy_server.policies.service import current_bundle

            self._bundle = current_bundle(self.db)
        return self._bundle


def process_events(db: Session, events: list[RuleInput]) -> list[Incident]:
    """Run the rules on stored events and merge the drafts; returns incidents touched."""
    by_key: dict[str, list[tuple[IncidentDraft, RuleInput]]] = defaultdict(list)
    for event in events:
        for draft in evaluate(event):
            by_key[draft.dedup_key[:300]].append((draft, event))
    if not by_key:
        return []
    keys = sorted(by_key)
    with db.no_autoflush:
        if db.get_bind().dialect.name == "postgresql":
            # Advisory locks on the keys, taken in sorted order in one statement: two concurrent
            # batches touching the same keys queue instead of deadlocking, cannot both open an
            # incident for one key, and never lose an update of `event_count`.  (SQLite's
            # BEGIN IMMEDIATE already runs one writer at a time.)
            db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                            "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"), {"keys": keys})
        earliest = min(e.occurred_at for e in events)
        open_by_key: dict[str, Incident] = {}
        for incident in db.scalars(
            select(Incident)
            .where(Incident.dedup_key.in_(keys), Incident.status != IncidentStatus.resolved,
                   Incident.window_ends_at >= earliest)
            .order_by(Incident.id)
        ):
            open_by_key[incident.dedup_key] = incident  # the newest one wins
        touched: dict[int, Incident] = {}
        opened: list[tuple[Incident, IncidentDraft, RuleInput]] = []
        added: dict[int, int] = defaultdict(int)  # id(incident) → events added in this batch
        members: list[tuple[Incident, str]] = []
        for key in keys:
            incident = open_by_key.get(key)
            for draft, event in sorted(by_key[key], key=lambda p: p[1].occurred_at):
                if incident is None or event.occurred_at > incident.window_ends_at:
                    incident = _new_incident(draft, event)
                    opened.append((incident, draft, event))
                else:
                    incident.event_count += 1
                    incident.last_seen_at = max(incident.last_seen_at, event.occurred_at)
                    incident.severity = _max_severity(incident.severity, draft.severity.value)
                    added[id(incident)] += 1
                touched[id(incident)] = incident
                members.append((incident, event.event_id))
        db.add_all(i for i, _, _ in opened)
        db.flush()  # one multi-row INSERT for the new incidents gives them their ids
        now = utcnow()
        timeline = [{"incident_id": i.id, "actor": SYSTEM, "action": "opened", "at": now,
                     "detail": {"event_id": e.event_id, "rule": d.rule}} for i, d, e in opened]
        timeline += [{"incident_id": i.id, "actor": SYSTEM, "action": "events_added", "at": now,
                      "detail": {"count": added[id(i)], "total": i.event_count}}
                     for i in touched.values() if added.get(id(i))]
        db.execute(insert(TimelineEntry), timeline)
        db.execute(insert(IncidentEvent), [{"incident_id": i.id, "event_id": eid} for i, eid in members])
        bundles = _BundleCache(db)
        for incident, draft, event in opened:
            for role in draft.notify:
                _notify(db, incident, role, draft, event, bundles)
    return list(touched.values())


def _new_incident(draft: IncidentDraft, event: RuleInput) -> Incident:
    return Incident(
        rule=draft.rule, title=draft.title[:300], params=draft.params, severity=draft.severity.value,
        clauses=list(draft.clauses), dedup_key=draft.dedup_key[:300], status=IncidentStatus.new,
        agent_id=event.agent_id, seat=event.seat, os_user=event.os_user,
        first_seen_at=event.occurred_at, last_seen_at=event.occurred_at,
        window_ends_at=event.occurred_at + timedelta(seconds=draft.window_s), event_count=1,
    )


def _notify(db: Session, incident: Incident, role: str, draft: IncidentDraft, event: RuleInput,
            bundles: _BundleCache) -> None:
    person_id = None
    to = role
    if role == "class_teacher":
        bundle = bundles.get()
        group_name = draft.params.get("group") or bundle.group_of(event.os_user)
        group = next((g for g in bundle.groups if g.name == group_name), None)
        if group is None or not group.class_teacher:
            return  # no class teacher known for this group: nobody to tell (the admin sees the incident)
        person = db.scalar(select(Person).where(Person.username == group.class_teacher))
        if person is None or person.disabled:
            return
        person_id, to = person.id, person.username
    db.add(Notification(incident_id=incident.id, person_id=person_id, role=role))
    db.add(TimelineEntry(incident_id=incident.id, actor=SYSTEM, action="notified", at=utcnow(),
                         detail={"role": role, "to": to}))
