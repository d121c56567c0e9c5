"""Agent-facing endpoints: enrolment and the school CA."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from policy_server import protocol, scope
from policy_server.agents import service
from policy_server.agents.auth import current_agent
from policy_server.db.models import Workstation
from policy_server.db.session import get_db

router = APIRouter(prefix="/api/v1", tags=["agents"])


@router.post("/enroll", response_model=protocol.EnrollResponse, dependencies=[Depends(scope.public)])
def enroll(body: protocol.EnrollRequest, db: Session = Depends(get_db)) -> protocol.EnrollResponse:
    response = service.enroll(db, body)
    db.commit()
    return response


@router.get("/ca", dependencies=[Depends(scope.agent_only)])
def school_ca(request: Request, agent: Workstation = Depends(current_agent)) -> dict[str, str]:
    """The school CA for the workstation's filtering proxy (key included: the proxy signs with it)."""
    settings = request.app.state.settings
    return {"cert_pem": settings.ca_cert_path.read_text(), "key_pem": settings.ca_key_path.read_text()}
