"""Agent-facing policy endpoints: the bundle (ETag/304) and the SSE push stream."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.agents.auth import authenticate_agent, bearer_token, current_agent
from policy_server.db.models import Workstation
from policy_server.db.session import get_db
from policy_server.policies.push import CLOSE
from policy_server.policies.service import current_bundle, etag_of

router = APIRouter(prefix="/api/v1", tags=["policy"])

KEEPALIVE_S = 15.0


@router.get("/policy", dependencies=[Depends(scope.agent_only)])
def get_policy(request: Request, agent: Workstation = Depends(current_agent), db: Session = Depends(get_db)):
    from policy_server.lessons.service import for_room  # only this room's lessons and bans

    bundle = for_room(current_bundle(db), agent.room.name if agent.room is not None else None)
    db.commit()  # a read: end it before the answer goes out (on SQLite it holds the write lock)
    etag = etag_of(bundle)
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(bundle.model_dump(mode="json"), headers={"ETag": etag, "Cache-Control": "no-cache"})


@router.get("/policy/stream", dependencies=[Depends(scope.agent_only)])
async def policy_stream(request: Request) -> StreamingResponse:
    """Server-sent events: a `policy` event with `PolicyPush` JSON on connect and on every new
    version; a comment line every 15 s keeps proxies and NAT from closing the connection."""
    token = bearer_token(request)
    agent = await asyncio.to_thread(authenticate_agent, request.app.state.sessionmaker, token)
    hub = request.app.state.push_hub
    queue = hub.subscribe(agent.id)  # closed at once when the agent is revoked (policies/push.py)

    async def stream():
        try:
            yield "retry: 2000\n\n"
            if hub.latest is not None:
                yield f"event: policy\ndata: {hub.latest.model_dump_json()}\n\n"
            while True:
                try:
                    push = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keepalive\n\n"
                    continue
                if push is CLOSE:  # revoked, or the server is stopping
                    return
                yield f"event: policy\ndata: {push.model_dump_json()}\n\n"
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
