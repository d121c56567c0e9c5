"""Bearer-token authentication for agents (`Authorization: Bearer <token>`)."""

from __future__ import annotations

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from policy_server.agents.service import agent_for_token
from policy_server.db.models import Workstation
from policy_server.db.session import get_db
from policy_server.errors import Unauthorized

_UNKNOWN_TOKEN = ("this agent token is unknown or was revoked: enrol the workstation again "
                  "with `kalkan-agent enroll`")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing agent token: send 'Authorization: Bearer <token>' from enrolment",
                           code="agent.token_missing")
    return token.strip()


def current_agent(request: Request, db: Session = Depends(get_db)) -> Workstation:
    ws = agent_for_token(db, bearer_token(request))
    if ws is None:
        raise Unauthorized(_UNKNOWN_TOKEN, code="agent.token_unknown")
    return ws


def authenticate_agent(sessionmaker, token: str) -> Workstation:
    """Look the token up in a short transaction of its own; the row comes back detached.

    For endpoints that must not hold a database session open (uploads, the SSE stream).  A
    read: on SQLite a deferred transaction (`read_only_engine`), so checking each batch's token
    never waits for, nor holds up, the one writer storing another batch."""
    with sessionmaker() as db:
        db.connection(execution_options={"kalkan_read_only": True})
        ws = agent_for_token(db, token)
        if ws is None:
            raise Unauthorized(_UNKNOWN_TOKEN, code="agent.token_unknown")
        db.expunge(ws)
        db.commit()
    return ws
