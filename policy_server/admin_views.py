"""Admin JSON API for policy changes and the ISUO log (session cookie + `X-CSRF-Token`)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import IsuoAccess, Person, Role
from policy_server.db.session import get_db
from policy_server.people.auth import require_csrf
from policy_server.policies import admin
from policy_server.scope import MAX_ID, Viewer

router = APIRouter(prefix="/api/v1", tags=["admin"])


def _writer(*roles: Role):
    role_dep = scope.allow(*roles)

    def dependency(_viewer: Viewer = Depends(role_dep), person: Person = Depends(require_csrf)) -> Person:
        return person

    return dependency


admin_writer = _writer(Role.admin)


class UsbAllowBody(BaseModel):
    event_id: str | None = None
    vendor_id: str | None = None
    product_id: str | None = None
    serial: str | None = None
    any_serial: bool = False
    note: str = Field(default="", max_length=200)


@router.post("/usb/allow")
def usb_allow(
    body: UsbAllowBody, person: Person = Depends(admin_writer), db: Session = Depends(get_db)
) -> dict:
    bundle = admin.allow_usb(db, actor=person, **body.model_dump())
    db.commit()
    return {"policy_version": bundle.version, "usb_allow": [e.model_dump() for e in bundle.usb.allow]}


class IntegrityAcceptBody(BaseModel):
    event_id: str


@router.post("/integrity/accept")
def integrity_accept(
    body: IntegrityAcceptBody, person: Person = Depends(admin_writer), db: Session = Depends(get_db)
) -> dict:
    bundle = admin.accept_integrity_change(db, actor=person, event_id=body.event_id)
    db.commit()
    return {"policy_version": bundle.version}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@router.get("/isuo/access")
def isuo_access(
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_ID),
    _viewer: Viewer = Depends(scope.allow(Role.admin)),
    db: Session = Depends(get_db),
) -> dict:
    rows = db.scalars(
        select(IsuoAccess)
        .order_by(IsuoAccess.started_at.desc())
        .limit(max(1, min(limit, 1000)))
        .offset(max(0, offset))
    )
    return {
        "access": [
            {
                "id": r.id,
                "source": r.source,
                "agent_id": r.agent_id,
                "seat": r.seat,
                "os_user": r.os_user,
                "isuo_user": r.isuo_user,
                "host": r.host,
                "started_at": _iso(r.started_at),
                "ended_at": _iso(r.ended_at),
            }
            for r in rows
        ]
    }
