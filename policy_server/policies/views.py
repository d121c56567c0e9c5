"""Agent-facing policy endpoints: the bundle (ETag/304) and the SSE push stream."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from policy_server import protocol, scope
from policy_server.agents.auth import authenticate_agent, bearer_token, current_agent
from policy_server.db.models import Workstation
from policy_server.db.session import get_db
from policy_server.policies.push import CLOSE, REPORTS, UPGRADE
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


# The push carries the room's bundle itself (protocol.PolicyPush.bundle) when it is at most this
# large: a change then costs each seat no second request (no TLS handshake on an idle keep-alive
# connection, no token lookup, no bundle read); the server reads and serialises it once per
# (version, room), not once per seat.  KALKAN_PUSH_INLINE=0 turns it off (the benchmark's baseline).
INLINE_MAX_BYTES = 512 * 1024
PUSH_INLINE = os.environ.get("KALKAN_PUSH_INLINE", "1") != "0"
_EVENT_CACHE = 32  # (version, room) events kept


class RoomEvents:
    """The SSE `policy` event for (content hash, room), built once in a worker thread and shared
    by every stream of that room; a failed build falls back to the bare notice."""

    def __init__(self, sessionmaker) -> None:
        self.sessionmaker = sessionmaker
        self._events: dict[tuple[str, str | None], asyncio.Future[str]] = {}

    def _build(self, room: str | None) -> str:
        from policy_server.lessons.service import for_room

        with self.sessionmaker() as db:
            bundle = for_room(current_bundle(db), room)
        raw = bundle.model_dump(mode="json")
        push = protocol.PolicyPush(version=bundle.version, content_hash=bundle.content_hash, bundle=raw)
        data = push.model_dump_json()
        if len(data) > INLINE_MAX_BYTES:
            data = push.model_copy(update={"bundle": None}).model_dump_json()
        return f"event: policy\ndata: {data}\n\n"

    async def event(self, push: protocol.PolicyPush, room: str | None) -> str:
        key = (push.content_hash, room)
        future = self._events.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(self._build, room))
            self._events[key] = future
            while len(self._events) > _EVENT_CACHE:
                self._events.pop(next(iter(self._events)))
        try:
            return await asyncio.shield(future)
        except Exception:  # noqa: BLE001 — the database is busy or gone: the notice still goes out
            self._events.pop(key, None)
            return f"event: policy\ndata: {push.model_dump_json()}\n\n"


def _room_events(request: Request) -> RoomEvents:
    events = getattr(request.app.state, "policy_room_events", None)
    if events is None:
        events = request.app.state.policy_room_events = RoomEvents(request.app.state.sessionmaker)
    return events


def _room_of(sessionmaker, agent_id: str) -> str | None:
    with sessionmaker() as db:
        ws = db.get(Workstation, agent_id)
        return ws.room.name if ws is not None and ws.room is not None else None


@router.get("/policy/stream", dependencies=[Depends(scope.agent_only)])
async def policy_stream(request: Request) -> StreamingResponse:
    """Server-sent events: a `policy` event with `PolicyPush` JSON (the room's bundle inline) on
    connect and on every new version; a `reports` event when reports sent from this seat were
    decided; an `upgrade` event when a rollout started; a comment line every 15 s keeps proxies
    and NAT from closing the connection."""
    token = bearer_token(request)
    agent = await asyncio.to_thread(authenticate_agent, request.app.state.sessionmaker, token)
    hub = request.app.state.push_hub
    queue = hub.subscribe(agent.id)  # closed at once when the agent is revoked (policies/push.py)
    room = None
    if PUSH_INLINE:
        room = await asyncio.to_thread(_room_of, request.app.state.sessionmaker, agent.id)
    events = _room_events(request)

    async def event(push: protocol.PolicyPush) -> str:
        if not PUSH_INLINE:
            return f"event: policy\ndata: {push.model_dump_json()}\n\n"
        return await events.event(push, room)

    async def stream():
        try:
            yield "retry: 2000\n\n"
            if hub.latest is not None:
                yield await event(hub.latest)
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
                if push is REPORTS:  # reports sent from this seat were decided (policies/push.py)
                    yield 'event: reports\ndata: {"reports": "decided"}\n\n'
                    continue
                if push is UPGRADE:  # a rollout started: the agent asks whether it is its turn
                    yield 'event: upgrade\ndata: {"upgrade": "started"}\n\n'
                    continue
                yield await event(push)
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
