"""Admin JSON API for incidents (session cookie; writes need the `X-CSRF-Token` header).

Admins act; directors and teachers read.  Directors get no OS user names (002 §3.1)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from policy_server.db.models import Person, Role
from policy_server.db.session import get_db
from policy_server.incidents import service
from policy_server.people.auth import require_csrf, require_roles

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

readers = require_roles(Role.admin, Role.director, Role.teacher)
admins = require_roles(Role.admin)


def _admin_writer(person: Person = Depends(admins), _csrf: Person = Depends(require_csrf)) -> Person:
    return person


def _for(person: Person, item: dict) -> dict:
    if person.role == Role.director:
        item = {**item, "os_user": None}
    return item


@router.get("")
def list_incidents(
    status: str | None = None,
    severity: str | None = None,
    limit: int = 50,
    offset: int = 0,
    person: Person = Depends(readers),
    db: Session = Depends(get_db),
) -> dict:
    items = service.list_incidents(db, status=status, severity=severity, limit=limit, offset=offset)
    return {
        "incidents": [_for(person, service.incident_as_dict(i)) for i in items],
        "total": service.count_incidents(db, status=status, severity=severity),
    }


@router.get("/{incident_id}")
def get_incident(incident_id: int, person: Person = Depends(readers), db: Session = Depends(get_db)) -> dict:
    incident = service.get_incident(db, incident_id)
    out = _for(person, service.incident_as_dict(incident, with_timeline=True))
    out["event_ids"] = [e.id for e in service.incident_events(db, incident_id)]
    return out


class ResolveBody(BaseModel):
    reason: str = Field(max_length=2000)


class AssignBody(BaseModel):
    assignee_id: int | None


@router.post("/{incident_id}/ack")
def acknowledge(
    incident_id: int, person: Person = Depends(_admin_writer), db: Session = Depends(get_db)
) -> dict:
    incident = service.acknowledge(db, incident_id=incident_id, actor=person)
    db.commit()
    return service.incident_as_dict(incident)


@router.post("/{incident_id}/resolve")
def resolve(
    incident_id: int,
    body: ResolveBody,
    person: Person = Depends(_admin_writer),
    db: Session = Depends(get_db),
) -> dict:
    incident = service.resolve(db, incident_id=incident_id, actor=person, reason=body.reason)
    db.commit()
    return service.incident_as_dict(incident)


@router.post("/{incident_id}/assign")
def assign(
    incident_id: int, body: AssignBody, person: Person = Depends(_admin_writer), db: Session = Depends(get_db)
) -> dict:
    incident = service.assign(db, incident_id=incident_id, actor=person, assignee_id=body.assignee_id)
    db.commit()
    return service.incident_as_dict(incident)
