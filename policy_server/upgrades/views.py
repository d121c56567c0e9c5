"""The agents' side of upgrades: `GET /api/v1/upgrade` (the order for this seat now, or 204) and
`POST /api/v1/upgrade/result` (what happened: upgraded, rolled back and why, failed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.agents.auth import current_agent
from policy_server.db.models import Workstation
from policy_server.db.session import get_db
from policy_server.upgrades import service

router = APIRouter(prefix="/api/v1", tags=["upgrades"])


class UpgradeResult(BaseModel):
    rollout: int
    state: str = Field(max_length=16)
    from_version: str = Field(default="", max_length=64)
    to_version: str = Field(default="", max_length=64)
    reason: str = Field(default="", max_length=2000)
    reason_code: str = Field(default="", max_length=32)


@router.get("/upgrade", dependencies=[Depends(scope.agent_only)])
def upgrade_order(agent: Workstation = Depends(current_agent), db: Session = Depends(get_db)):
    offer = service.offer_for(db, agent)
    db.commit()
    if offer is None:
        return Response(status_code=204)
    return offer.as_dict()


@router.post("/upgrade/result", dependencies=[Depends(scope.agent_only)])
def upgrade_result(body: UpgradeResult, agent: Workstation = Depends(current_agent),
                   db: Session = Depends(get_db)) -> dict:
    row = service.record_result(db, agent, rollout_id=body.rollout, state=body.state,
                                from_version=body.from_version, to_version=body.to_version,
                                reason=body.reason, reason_code=body.reason_code)
    db.commit()
    return {"rollout": body.rollout, "state": row.state}
