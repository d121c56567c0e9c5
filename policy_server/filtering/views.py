"""Filtering JSON API.

Agents (token): `GET /api/v1/filtering/index/{sha256}` — a published category index by its
hash (the agent checks the hash and swaps the file); `GET /api/v1/filtering/reports` — the
status of the reports and unblock requests sent from this seat (its report page shows them).

The responsible person: `GET /api/v1/filtering/queue`, `POST /api/v1/filtering/queue/decide`,
`POST /api/v1/filtering/try` (what each group gets for a URL, and which rule decides).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.agents.auth import current_agent
from policy_server.db.models import Role, Workstation
from policy_server.db.session import get_db
from policy_server.errors import NotFound
from policy_server.filtering import lists, queue, trial
from policy_server.people.auth import require_csrf

router = APIRouter(prefix="/api/v1/filtering", tags=["filtering"])


@router.get("/index/{sha256}", dependencies=[Depends(scope.agent_only)])
def get_index(sha256: str, request: Request, agent: Workstation = Depends(current_agent),
              db: Session = Depends(get_db)) -> FileResponse:
    path = lists.published_path(db, request.app.state.settings.state_dir, sha256.lower())
    db.commit()  # a read: end it before the file goes out (on SQLite it holds the write lock)
    if path is None:
        raise NotFound(f"no published category index {sha256[:16]}…; the server publishes one with "
                       "kalkan-server lists update")
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Cache-Control": "public, max-age=31536000, immutable",
                                 "X-Content-SHA256": sha256.lower()})


@router.get("/reports", dependencies=[Depends(scope.agent_only)])
def seat_reports(agent: Workstation = Depends(current_agent), db: Session = Depends(get_db)) -> dict:
    items = queue.seat_statuses(db, agent_id=agent.id)
    db.commit()
    return {"reports": items}


@router.get("/queue")
def get_queue(status: str = "received", viewer: scope.Viewer = Depends(scope.allow(Role.admin)),
              db: Session = Depends(get_db)) -> dict:
    rows = queue.list_queue(db, viewer=viewer, status=status)
    db.commit()
    return {"items": [queue.as_json(r) for r in rows]}


class DecideBody(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=500)
    action: str  # block | allow | reject
    scope: str = "school"  # school | group | seat
    target: str | None = None  # the group or seat name
    entry: str | None = None  # what to list (default: the URL's host, or host/path)
    until: datetime | None = None
    reason: str = ""


@router.post("/queue/decide", dependencies=[Depends(require_csrf)])
def decide(body: DecideBody, viewer: scope.Viewer = Depends(scope.allow(Role.admin)),
           db: Session = Depends(get_db)) -> dict:
    result = queue.decide(db, viewer=viewer, ids=body.ids, action=body.action, scope=body.scope,
                          target=body.target, entry=body.entry, until=body.until, reason=body.reason)
    db.commit()
    return result


class TryBody(BaseModel):
    url: str = Field(min_length=1, max_length=4096)
    at: datetime | None = None
    room: str | None = None


@router.post("/try", dependencies=[Depends(require_csrf)])
def try_url(body: TryBody, viewer: scope.Viewer = Depends(scope.allow(Role.admin)),
            request: Request = None, db: Session = Depends(get_db)) -> dict:
    return {"verdicts": trial.try_url(db, state_dir=request.app.state.settings.state_dir, url=body.url,
                                      at=body.at, room=body.room)}
