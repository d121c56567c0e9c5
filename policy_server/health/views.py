"""`GET /healthz`: ok / degraded / unavailable, from a real database write and the disk."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from policy_server import protocol, scope

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[Depends(scope.public)])
async def healthz(request: Request) -> JSONResponse:
    """`status`: `ok`, `degraded` (disk low; still 200) or `unavailable` (503: the database
    cannot write or the disk is full); `database.writable`, `disk.free_bytes` as measured."""
    health = await run_in_threadpool(request.app.state.health.get)
    return JSONResponse(
        {"status": health.status, "protocol_version": protocol.PROTOCOL_VERSION,
         "database": health.database, "disk": health.disk},
        status_code=health.http_status,
        headers={"Cache-Control": "no-store", **({"Retry-After": "5"} if health.http_status == 503 else {})})
