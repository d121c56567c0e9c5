"""`GET /metrics`: the server's metrics in the Prometheus text format (docs/operations.md).

Only the responsible person (logged in) or a scraper with the bearer token
`KALKAN_METRICS_TOKEN` may read it: the counts say how many seats a school has and when
they are on, which is nobody else's business.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import Role
from policy_server.db.session import get_db
from policy_server.operations.metrics import CONTENT_TYPE, render

router = APIRouter(tags=["operations"])


@router.get("/metrics")
async def metrics(
    request: Request,
    _viewer: scope.Viewer = Depends(scope.allow_or_token(Role.admin, setting="metrics_token")),
    db: Session = Depends(get_db),
) -> Response:
    # The scope check's session (the same one, cached per request): on SQLite a second one
    # would wait for the write lock this one may hold.
    text = await run_in_threadpool(render, request.app, db)
    return Response(text, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
