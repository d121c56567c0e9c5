"""Bearer-token authentication for agents (`Authorization: Bearer <token>`)."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from policy_server.agents.service import agent_for_token
from policy_server.db.models import Workstation
from policy_server.db.session import get_db

_UNKNOWN_TOKEN = ("this agent token is unknown or was revoked: enrol the workstation again "
                  "with `kalkan-agent enroll`")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing agent token: send 'Authorization: Bearer <token>' from enrolment",
                            headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def current_agent(request: Request, db: Session = Depends(get_db)) -> Workstation:
    ws = agent_for_token(db, bearer_token(request))
    if ws is None:
        raise HTTPException(401, _UNKNOWN_TOKEN, headers={"WWW-Authenticate": "Bearer"})
    return ws


def authenticate_agent(sessionmaker, token: str) -> Workstation:
    """Look the token up in a short transaction of its own; the row comes back detached.

    For endpoints that must not hold a database session open (uploads, the SSE stream)."""
    with sessionmaker() as db:
        ws = agent_for_token(db, token)
        if ws is None:
            raise HTTPException(401, _UNKNOWN_TOKEN, headers={"WWW-Authenticate": "Bearer"})
        db.expunge(ws)
        db.commit()
    return ws
