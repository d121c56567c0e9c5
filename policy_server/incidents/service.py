"""Incident lifecycle: new → acknowledged → resolved, with an assignee and a timeline.

Keyword-only service functions over a session; the caller commits.  Every change writes a
`TimelineEntry` (the incident's own history, with its actor) and an `AuditRecord` (the
school's trail of admin actions, 004 §3.6).  Nothing is deleted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from policy_server.audit import audit
from policy_server.db.models import (
    Event,
    Incident,
    IncidentEvent,
    IncidentStatus,
    Person,
    TimelineEntry,
    utcnow,
)
from policy_server.errors import Conflict, InvalidInput, NotFound

STATUSES = tuple(s.value for s in IncidentStatus)


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown incident status {status!r}; use one of: {', '.join(STATUSES)}")


def list_incidents(
    db: Session,
    *,
    status: str | None = None,
    severity: str | None = None,
    agent_ids: list[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Incident]:
    """Newest first.  `agent_ids` restricts to those workstations (e.g. a teacher's room)."""
    _check_status(status)
    query = select(Incident).order_by(Incident.last_seen_at.desc(), Incident.id.desc())
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    if agent_ids is not None:
        query = query.where(Incident.agent_id.in_(agent_ids))
    return list(db.scalars(query.limit(max(1, min(limit, 500))).offset(max(0, offset))))


def count_incidents(db: Session, *, status: str | None = None, severity: str | None = None) -> int:
    _check_status(status)
    query = select(func.count(Incident.id))
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    return db.scalar(query) or 0


def get_incident(db: Session, incident_id: int) -> Incident:
    incident = db.get(Incident, incident_id, options=[selectinload(Incident.timeline)])
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


def incident_events(db: Session, incident_id: int, *, limit: int = 100) -> list[Event]:
    query = (
        select(Event).join(IncidentEvent, IncidentEvent.event_id == Event.id)
        .where(IncidentEvent.incident_id == incident_id)
        .order_by(Event.occurred_at).limit(limit)
    )
    return list(db.scalars(query))


def _actor_name(actor: Person | str) -> str:
    return actor.username if isinstance(actor, Person) else str(actor)


def _change(db: Session, incident: Incident, *, actor: str, action: str, detail: dict[str, Any]) -> None:
    db.add(TimelineEntry(incident_id=incident.id, actor=actor, action=action, detail=detail, at=utcnow()))
    audit(db, actor=actor, action=f"incident.{action}", target=f"incident:{incident.id}", detail=detail)


def acknowledge(db: Session, *, incident_id: int, actor: Person | str) -> Incident:
    incident = get_incident(db, incident_id)
    if incident.status == IncidentStatus.resolved:
        raise Conflict(f"incident {incident_id} is already resolved; it cannot be acknowledged again",
                       code="incident.already_resolved")
    if incident.status == IncidentStatus.acknowledged:
        return incident  # idempotent: a double click changes nothing
    incident.status = IncidentStatus.acknowledged
    _change(db, incident, actor=_actor_name(actor), action="acknowledged", detail={})
    return incident


def resolve(db: Session, *, incident_id: int, actor: Person | str, reason: str) -> Incident:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a resolution needs a reason: write what was done or why no action is needed",
                           code="incident.reason_missing")
    if len(reason) > 2000:
        raise InvalidInput("the resolution reason is too long (at most 2000 characters)",
                           code="incident.reason_too_long")
    incident = get_incident(db, incident_id)
    if incident.status == IncidentStatus.resolved:
        raise Conflict(f"incident {incident_id} is already resolved", code="incident.already_resolved")
    incident.status = IncidentStatus.resolved
    incident.resolution = reason
    _change(db, incident, actor=_actor_name(actor), action="resolved", detail={"reason": reason})
    return incident


def assign(db: Session, *, incident_id: int, actor: Person | str, assignee_id: int | None) -> Incident:
    incident = get_incident(db, incident_id)
    assignee = None
    if assignee_id is not None:
        assignee = db.get(Person, assignee_id)
        if assignee is None or assignee.disabled:
            raise InvalidInput(f"person {assignee_id} does not exist or is disabled; choose an active person",
                               code="person.not_active")
    incident.assignee_id = assignee_id
    _change(db, incident, actor=_actor_name(actor), action="assigned",
            detail={"assignee_id": assignee_id, "assignee": assignee.username if assignee else None})
    return incident


def incident_as_dict(incident: Incident, *, with_timeline: bool = False) -> dict[str, Any]:
    out = {
        "id": incident.id, "rule": incident.rule, "title": incident.title, "params": incident.params,
        "severity": incident.severity, "clauses": incident.clauses, "status": incident.status,
        "agent_id": incident.agent_id, "seat": incident.seat, "os_user": incident.os_user,
        "first_seen_at": incident.first_seen_at.isoformat(),
        "last_seen_at": incident.last_seen_at.isoformat(),
        "event_count": incident.event_count, "assignee_id": incident.assignee_id,
        "resolution": incident.resolution, "dedup_key": incident.dedup_key,
    }
    if with_timeline:
        out["timeline"] = [
            {"at": t.at.isoformat(), "actor": t.actor, "action": t.action, "detail": t.detail}
            for t in incident.timeline
        ]
    return out
