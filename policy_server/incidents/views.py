"""Admin JSON API for incidents (session cookie; writes need the `X-CSRF-Token` header).

The responsible person acts; the director and teachers read.  What each sees is the
service's business (`incidents.service` with the `scope.Viewer`): a teacher only their rooms'
incidents and those they were told about, the director no personal data (002 §3.1)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import Person, Role
from policy_server.db.session import get_db
from policy_server.incidents import service
from policy_server.people.auth import require_csrf
from policy_server.scope import MAX_ID, Viewer

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

readers = scope.allow(Role.admin, Role.director, Role.teacher)
admins = scope.allow(Role.admin)
IncidentId = Path(ge=1, le=MAX_ID, description="the incident's number")


def _admin_writer(viewer: Viewer = Depends(admins), _csrf: Person = Depends(require_csrf)) -> Viewer:
    return viewer


def _language(accept_language: str | None = Header(None, max_length=500)) -> str:
    """The language of the texts the server writes (a resolution): Accept-Language, else English."""
    from policy_server.app import api_language

    return api_language(accept_language)


def _one(db: Session, viewer: Viewer, incident, *, with_timeline: bool = False, language: str = "en") -> dict:
    params = service.reader_params(db, [incident], viewer=viewer)[incident.id]
    return service.incident_as_dict(incident, viewer=viewer, params=params, with_timeline=with_timeline,
                                    language=language)


@router.get("")
def list_incidents(
    status: str | None = Query(None, max_length=32),
    severity: str | None = Query(None, max_length=32),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_ID),
    viewer: Viewer = Depends(readers),
    db: Session = Depends(get_db),
    language: str = Depends(_language),
) -> dict:
    items = service.list_incidents(db, viewer=viewer, status=status, severity=severity, limit=limit,
                                   offset=offset)
    params = service.reader_params(db, items, viewer=viewer)
    return {
        "incidents": [service.incident_as_dict(i, viewer=viewer, params=params[i.id], language=language)
                      for i in items],
        "total": service.count_incidents(db, viewer=viewer, status=status, severity=severity),
    }


@router.get("/{incident_id}")
def get_incident(incident_id: int = IncidentId, viewer: Viewer = Depends(readers),
                 db: Session = Depends(get_db), language: str = Depends(_language)) -> dict:
    incident = service.get_incident(db, incident_id, viewer=viewer)
    out = _one(db, viewer, incident, with_timeline=True, language=language)
    out["event_ids"] = [e.id for e in service.incident_events(db, incident_id)]
    return out


class ResolveBody(BaseModel):
    reason: str = Field(max_length=2000)


class AssignBody(BaseModel):
    assignee_id: int | None = Field(ge=1, le=MAX_ID)


@router.post("/{incident_id}/ack")
def acknowledge(
    incident_id: int = IncidentId, viewer: Viewer = Depends(_admin_writer), db: Session = Depends(get_db)
) -> dict:
    incident = service.acknowledge(db, incident_id=incident_id, viewer=viewer)
    db.commit()
    return _one(db, viewer, incident)


@router.post("/{incident_id}/resolve")
def resolve(
    body: ResolveBody,
    incident_id: int = IncidentId,
    viewer: Viewer = Depends(_admin_writer),
    db: Session = Depends(get_db),
) -> dict:
    incident = service.resolve(db, incident_id=incident_id, viewer=viewer, reason=body.reason)
    db.commit()
    return _one(db, viewer, incident)


@router.post("/{incident_id}/assign")
def assign(
    body: AssignBody, incident_id: int = IncidentId, viewer: Viewer = Depends(_admin_writer),
    db: Session = Depends(get_db)
) -> dict:
    incident = service.assign(db, incident_id=incident_id, viewer=viewer, assignee_id=body.assignee_id)
    db.commit()
    return _one(db, viewer, incident)
