"""Agent-facing endpoints: enrolment and the school CA."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from policy_server import protocol, scope
from policy_server.agents import service
from policy_server.agents.auth import current_agent
from policy_server.audit import audit
from policy_server.db.models import Workstation
from policy_server.db.session import get_db

router = APIRouter(prefix="/api/v1", tags=["agents"])


@router.post("/enroll", response_model=protocol.EnrollResponse, dependencies=[Depends(scope.public)])
def enroll(body: protocol.EnrollRequest, db: Session = Depends(get_db)) -> protocol.EnrollResponse:
    response = service.enroll(db, body)
    db.commit()
    return response


@router.get("/ca", dependencies=[Depends(scope.agent_only)])
def school_ca(request: Request, agent: Workstation = Depends(current_agent),
              db: Session = Depends(get_db)) -> dict:
    """This agent's own subordinate CA for its filtering proxy (new key, short-lived, name
    constraints excluding ISUO and the passed-through hosts) and the school CA to trust.
    The school CA's key never leaves the server (policy_server/tls.py)."""
    from policy_server.policies.service import current_bundle
    from policy_server.tls import excluded_hosts, issue_agent_ca

    settings = request.app.state.settings
    excluded = excluded_hosts(current_bundle(db))
    cert_pem, key_pem, expires = issue_agent_ca(settings.ca_cert_path, settings.ca_key_path,
                                                agent_id=agent.id, excluded=excluded)
    audit(db, actor=f"agent:{agent.id}", action="agent.ca_issued", target=agent.id,
          detail={"expires_at": expires.isoformat(), "excluded": excluded})
    db.commit()
    return {"cert_pem": cert_pem, "key_pem": key_pem, "root_pem": settings.ca_cert_path.read_text(),
            "expires_at": expires.isoformat(), "excluded": excluded}
