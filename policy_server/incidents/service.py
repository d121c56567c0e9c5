"""Incident lifecycle: new → acknowledged → resolved, with an assignee and a timeline.

Keyword-only service functions over a session; the caller commits.  Every function takes the
`scope.Viewer` it works for: a teacher reads only the incidents of their rooms and those they
were told about, the director and the district viewer read without personal data, only the
responsible person acts (docs/security.md).  Every change writes a
`TimelineEntry` (the incident's own history, with its actor) and an `AuditRecord` (the
school's trail of admin actions, 004 §3.6).  Nothing is deleted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, false, func, or_, select, true
from sqlalchemy.orm import Session, selectinload

from policy_server.audit import audit
from policy_server.db.models import (
    Event,
    Incident,
    IncidentEvent,
    IncidentStatus,
    Notification,
    Person,
    TimelineEntry,
    Workstation,
    utcnow,
)
from policy_server.errors import Conflict, InvalidInput, NotFound
from policy_server.scope import MAX_ID, NotAllowed, Viewer

STATUSES = tuple(s.value for s in IncidentStatus)


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown incident status {status!r}; use one of: {', '.join(STATUSES)}")


def visible_to(viewer: Viewer) -> ColumnElement[bool]:
    """The incidents `viewer` may see (docs/security.md "Roles and scopes"): all for the
    responsible person, the director and the district viewer (these two without personal
    data); for a teacher, those of the workstations in their rooms (`person_rooms`, 000 §7.3),
    those of the classes they teach (`person_classes`: the incident began during a timetable
    period of the class, `Incident.class_id`) and those they were told about as class teacher
    (001 §2.7)."""
    if viewer.room_ids is None:
        return true()
    conditions = []
    if viewer.room_ids:
        conditions.append(Incident.agent_id.in_(
            select(Workstation.id).where(Workstation.room_id.in_(sorted(viewer.room_ids)))))
    if viewer.class_ids:  # the classes they teach: incidents that began during the class's period
        conditions.append(Incident.class_id.in_(sorted(viewer.class_ids)))
    if viewer.person_id is not None:
        conditions.append(Incident.id.in_(
            select(Notification.incident_id).where(Notification.person_id == viewer.person_id)))
    return or_(*conditions) if conditions else false()


def _filtered(query: Select, viewer: Viewer, status: str | None, severity: str | None) -> Select:
    _check_status(status)
    query = query.where(visible_to(viewer))
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    return query


def list_incidents(
    db: Session,
    *,
    viewer: Viewer,
    status: str | None = None,
    severity: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Incident]:
    """Newest first, within what `viewer` may see."""
    query = select(Incident).order_by(Incident.last_seen_at.desc(), Incident.id.desc())
    query = _filtered(query, viewer, status, severity)
    return list(db.scalars(query.limit(max(1, min(limit, 500))).offset(max(0, offset))))


def count_incidents(db: Session, *, viewer: Viewer, status: str | None = None,
                    severity: str | None = None) -> int:
    return db.scalar(_filtered(select(func.count(Incident.id)), viewer, status, severity)) or 0


def status_counts(db: Session, *, viewer: Viewer) -> dict[str, int]:
    """How many incidents `viewer` may see in each status (no personal data)."""
    query = select(Incident.status, func.count(Incident.id)).where(visible_to(viewer))
    return {status: count for status, count in db.execute(query.group_by(Incident.status))}


def get_incident(db: Session, incident_id: int, *, viewer: Viewer) -> Incident:
    """The incident, or NotFound when it does not exist *or* `viewer` may not see it (a
    teacher cannot even learn that another room's incident exists)."""
    incident = db.get(Incident, incident_id, options=[selectinload(Incident.timeline)])
    if incident is None or (viewer.room_ids is not None and not db.scalar(
            select(Incident.id).where(Incident.id == incident_id, visible_to(viewer)))):
        raise NotFound(f"incident {incident_id} does not exist", code="incident.not_found",
                       params={"id": incident_id})
    return incident


def incident_events(db: Session, incident_id: int, *, limit: int = 100) -> list[Event]:
    query = (
        select(Event).join(IncidentEvent, IncidentEvent.event_id == Event.id)
        .where(IncidentEvent.incident_id == incident_id)
        .order_by(Event.occurred_at).limit(limit)
    )
    return list(db.scalars(query))


def _acting(db: Session, incident_id: int, viewer: Viewer) -> Incident:
    if not viewer.acts_on_incidents:
        raise NotAllowed("Your role may not see or do this. Ask the school's responsible person if you "
                         "need it.", code="auth.forbidden")
    return get_incident(db, incident_id, viewer=viewer)


def _change(db: Session, incident: Incident, *, actor: str, action: str, detail: dict[str, Any]) -> None:
    db.add(TimelineEntry(incident_id=incident.id, actor=actor, action=action, detail=detail, at=utcnow()))
    audit(db, actor=actor, action=f"incident.{action}", target=f"incident:{incident.id}", detail=detail)


def acknowledge(db: Session, *, incident_id: int, viewer: Viewer) -> Incident:
    incident = _acting(db, incident_id, viewer)
    if incident.status == IncidentStatus.resolved:
        raise Conflict(f"incident {incident_id} is already resolved; it cannot be acknowledged again",
                       code="incident.already_resolved")
    if incident.status == IncidentStatus.acknowledged:
        return incident  # idempotent: a double click changes nothing
    incident.status = IncidentStatus.acknowledged
    _change(db, incident, actor=viewer.name, action="acknowledged", detail={})
    return incident


def resolve(db: Session, *, incident_id: int, viewer: Viewer, reason: str) -> Incident:
    incident = _acting(db, incident_id, viewer)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a resolution needs a reason: write what was done or why no action is needed",
                           code="incident.reason_missing")
    if len(reason) > 2000:
        raise InvalidInput("the resolution reason is too long (at most 2000 characters)",
                           code="incident.reason_too_long")
    if incident.status == IncidentStatus.resolved:
        raise Conflict(f"incident {incident_id} is already resolved", code="incident.already_resolved")
    incident.status = IncidentStatus.resolved
    incident.resolution = reason
    _change(db, incident, actor=viewer.name, action="resolved", detail={"reason": reason})
    return incident


def assign(db: Session, *, incident_id: int, viewer: Viewer, assignee_id: int | None) -> Incident:
    incident = _acting(db, incident_id, viewer)
    assignee = None
    if assignee_id is not None:
        assignee = db.get(Person, assignee_id) if 0 < assignee_id <= MAX_ID else None
        if assignee is None or assignee.disabled:
            raise InvalidInput(f"person {assignee_id} does not exist or is disabled; choose an active person",
                               code="person.not_active")
    incident.assignee_id = assignee_id
    _change(db, incident, actor=viewer.name, action="assigned",
            detail={"assignee_id": assignee_id, "assignee": assignee.username if assignee else None})
    return incident


# Rules whose incident is about one page: the page's URL is personal data (what a student
# opened), so the incident keeps only the host in `params`; the reader's view takes the URL
# from the incident's first event, for those who may see it.
URL_RULES = frozenset({"web.report", "web.unblock_request"})


def reader_params(db: Session, incidents: list[Incident], *, viewer: Viewer) -> dict[int, dict[str, Any]]:
    """Each incident's `params` as `viewer` may read them (incident id -> params).

    Stored params carry no personal data (rules, docs/security.md).  For the responsible
    person and teachers the view adds the page's URL (from the first event) and the OS user;
    for the director and the district viewer `url` is only the host (002 §3.1)."""
    out = {i.id: dict(i.params or {}) for i in incidents}
    with_url = [i.id for i in incidents if i.rule in URL_RULES]
    first_url: dict[int, str] = {}
    if with_url and viewer.sees_personal_data:
        rows = db.execute(select(IncidentEvent.incident_id, Event.data)
                          .join(Event, Event.id == IncidentEvent.event_id)
                          .where(IncidentEvent.incident_id.in_(with_url))
                          .order_by(IncidentEvent.incident_id, Event.occurred_at))
        for incident_id, data in rows:
            url = (data or {}).get("url")
            if url and incident_id not in first_url:
                first_url[incident_id] = str(url)
    for incident in incidents:
        params = out[incident.id]
        if incident.rule in URL_RULES:
            params["url"] = first_url.get(incident.id) or params.get("host") or ""
        if viewer.sees_personal_data:
            params["os_user"] = incident.os_user
        else:
            for key in PERSONAL_PARAMS:
                params.pop(key, None)
            if incident.rule in URL_RULES:
                params["url"] = params.get("host") or ""
    return out


# Never shown to those who see no personal data, even if an old incident still has them.
PERSONAL_PARAMS = ("os_user", "comment", "path", "user", "users", "isuo_user")


def resolution_text(incident: Incident, *, viewer: Viewer, language: str) -> str | None:
    """How the incident was resolved, for this reader: a resolution the system made (a code and
    params) in the reader's language, for everyone; a person's own words (which may name a
    student) only for those who see personal data."""
    if incident.resolution_code:
        from policy_server.incidents import details

        if incident.resolution_code in details.TIMELINE_NOTES:
            return details.timeline_note(language, {"note": incident.resolution_code,
                                                    **(incident.resolution_params or {})})
        return incident.resolution_code
    return incident.resolution if viewer.sees_personal_data else None


def incident_as_dict(incident: Incident, *, viewer: Viewer, params: dict[str, Any] | None = None,
                     with_timeline: bool = False, language: str = "en") -> dict[str, Any]:
    """The incident as `viewer` may read it (the JSON API).  `params` from `reader_params`;
    `language`: the one texts the server writes (the resolution) are given in."""
    personal = viewer.sees_personal_data
    out = {
        "id": incident.id, "rule": incident.rule,
        "title": incident.title if personal else rule_title(incident.rule, incident.title),
        "params": params if params is not None else {k: v for k, v in (incident.params or {}).items()
                                                      if personal or k not in PERSONAL_PARAMS},
        "severity": incident.severity, "clauses": incident.clauses, "status": incident.status,
        "agent_id": incident.agent_id, "seat": incident.seat,
        "os_user": incident.os_user if personal else None,
        "first_seen_at": incident.first_seen_at.isoformat(),
        "last_seen_at": incident.last_seen_at.isoformat(),
        "event_count": incident.event_count, "assignee_id": incident.assignee_id,
        "resolution": resolution_text(incident, viewer=viewer, language=language),
        "resolution_code": incident.resolution_code, "resolution_params": incident.resolution_params,
        "dedup_key": incident.dedup_key if personal else None,
    }
    if with_timeline:
        out["timeline"] = [
            {"at": t.at.isoformat(), "actor": t.actor, "action": t.action,
             "detail": t.detail if personal else {k: v for k, v in (t.detail or {}).items()
                                                   if k not in ("reason", "event_id")}}
            for t in incident.timeline
        ]
    return out


def rule_title(rule: str, stored: str) -> str:
    """The title for a reader without personal data: the stored one (which carries none since
    the rules stopped putting names and URLs in it) unless it is an old one of a page rule."""
    if rule in URL_RULES and "://" in stored:
        return stored.split(":", 1)[0]
    return stored
