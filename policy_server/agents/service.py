"""Enrolment and the workstation register.

* An *enrolment code* (`kalkan-server enrollment-code`) is short enough to type at a seat
  (`KQ7M-3XHP-9TNC`); only its SHA-256 is stored, with the uses left and an expiry.
* `enroll` trades a code for an agent id and a bearer token; only the token's SHA-256 is
  stored.  `revoke_agent` ends a token (the workstation must enrol again).
* `list_workstations` is the register the web console shows: last seen and health.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import EnrollmentCode, Room, Workstation, utcnow
from policy_server.errors import InvalidInput, KalkanError, NotFound
from policy_server.policies.push import schedule_revocation
from policy_server.school.service import get_room, get_school
from policy_server.scope import Viewer

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by hand
CODE_GROUPS, CODE_GROUP_LEN = 3, 4
STALE_AFTER_S = 10 * 60  # a seat not heard from for 10 minutes is shown as "not seen"


class EnrollmentRefused(KalkanError):
    status_code = 403


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).upper()


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime:
    """'7d', '12h', '30m' or an ISO 8601 time with zone → an aware UTC datetime."""
    now = now or utcnow()
    match = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if match:
        amount, unit = int(match[1]), match[2]
        return now + {"d": timedelta(days=amount), "h": timedelta(hours=amount),
                      "m": timedelta(minutes=amount)}[unit]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"expiry {text!r} is not understood: write e.g. '7d', '12h', '30m' or "
            "'2025-09-01T08:00:00+06:00'",
            code="enrollment_code.bad_expiry", params={"text": text},
        ) from None
    if when.tzinfo is None:
        raise InvalidInput(f"expiry {text!r} has no time zone: add one, e.g. '+06:00' for Bishkek",
                           code="enrollment_code.expiry_without_zone", params={"text": text})
    if when <= now:
        raise InvalidInput(f"expiry {text!r} is in the past; choose a later time",
                           code="enrollment_code.expiry_in_past", params={"text": text})
    return when


def create_enrollment_code(
    db: Session, *, actor: str, room: str | None = None, uses: int = 1, expires_at: datetime | None = None
) -> str:
    """A fresh code (returned once, in clear; the database keeps its hash)."""
    if uses < 1 or uses > 10_000:
        raise InvalidInput(f"uses must be between 1 and 10000, not {uses}",
                           code="enrollment_code.bad_uses", params={"uses": uses})
    room_row = get_room(db, room) if room else None
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LEN))
    code = "-".join(raw[i:i + CODE_GROUP_LEN] for i in range(0, len(raw), CODE_GROUP_LEN))
    expires_at = expires_at or utcnow() + timedelta(days=7)
    db.add(EnrollmentCode(code_hash=_sha256(raw), room_id=room_row.id if room_row else None, uses_left=uses,
                          expires_at=expires_at, created_by=actor))
    audit(db, actor=actor, action="enrollment_code.create", target=room or "",
          detail={"uses": uses, "expires_at": expires_at.isoformat()})
    return code


def enroll(db: Session, request: protocol.EnrollRequest) -> protocol.EnrollResponse:
    """Trade an enrolment code for an agent id and token.  The caller commits."""
    if request.protocol_version not in protocol.SUPPORTED_PROTOCOL_VERSIONS:
        raise EnrollmentRefused(
            f"this agent speaks protocol version {request.protocol_version}, the server supports "
            f"{sorted(protocol.SUPPORTED_PROTOCOL_VERSIONS)}: update the agent or the server",
            code="enroll.protocol_unsupported",
            params={"version": request.protocol_version,
                    "supported": sorted(protocol.SUPPORTED_PROTOCOL_VERSIONS)},
        )
    code_hash = _sha256(normalize_code(request.code))
    # Take one use atomically, so two seats racing for the last use cannot both win.
    now = utcnow()
    taken = db.execute(
        update(EnrollmentCode)
        .where(EnrollmentCode.code_hash == code_hash, EnrollmentCode.uses_left > 0,
               EnrollmentCode.expires_at > now)
        .values(uses_left=EnrollmentCode.uses_left - 1)
    ).rowcount
    if taken != 1:
        code = db.scalar(select(EnrollmentCode).where(EnrollmentCode.code_hash == code_hash))
        if code is None:
            raise EnrollmentRefused("this enrolment code is not known: check for typing mistakes, or ask the "
                                    "responsible person for a new code (`kalkan-server enrollment-code`)",
                                    code="enroll.unknown_code")
        if code.expires_at <= now:
            raise EnrollmentRefused(f"this enrolment code expired on {code.expires_at:%Y-%m-%d %H:%M} UTC: "
                                    "ask the responsible person for a new code",
                                    code="enroll.code_expired",
                                    params={"expired": f"{code.expires_at:%Y-%m-%d %H:%M}"})
        raise EnrollmentRefused("this enrolment code has been used up: ask the responsible person for a new "
                                "code (`kalkan-server enrollment-code --uses N` for several seats)",
                                code="enroll.code_used_up")
    code = db.scalar(select(EnrollmentCode).where(EnrollmentCode.code_hash == code_hash))
    room = db.get(Room, code.room_id) if code.room_id else None
    token = secrets.token_urlsafe(32)
    agent_id = str(uuid.uuid4())
    db.add(Workstation(
        id=agent_id, hostname=request.hostname, seat=request.seat, room_id=room.id if room else None,
        token_hash=_sha256(token), os=request.os, agent_version=request.agent_version,
        protocol_version=request.protocol_version, health={},
    ))
    audit(db, actor=f"agent:{agent_id}", action="agent.enroll", target=request.hostname,
          detail={"room": room.name if room else None, "seat": request.seat})
    school = get_school(db)
    return protocol.EnrollResponse(agent_id=agent_id, token=token, school=school.name if school else "",
                                   room=room.name if room else None, seat=request.seat)


def agent_for_token(db: Session, token: str) -> Workstation | None:
    """The workstation owning this bearer token, if the token is valid and not revoked."""
    ws = db.scalar(select(Workstation).where(Workstation.token_hash == _sha256(token)))
    if ws is None or ws.token_revoked:
        return None
    return ws


def revoke_agent(db: Session, *, agent_id: str, actor: str) -> Workstation:
    ws = db.get(Workstation, agent_id)
    if ws is None:
        raise NotFound(f"no workstation with agent id {agent_id!r}; see the workstation list for the ids",
                       code="agent.not_found", params={"agent_id": agent_id})
    ws.token_revoked = True
    audit(db, actor=actor, action="agent.revoke", target=agent_id, detail={"hostname": ws.hostname})
    schedule_revocation(db, agent_id)  # its open push streams close at the commit
    return ws


@dataclass
class WorkstationView:
    """One row of the workstation register, ready to show."""

    id: str
    hostname: str
    seat: str | None
    room: str | None
    last_seen_at: datetime | None
    seconds_since_seen: float | None
    stale: bool
    revoked: bool
    policy_version: int | None
    agent_version: str
    collectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """ok | degraded | failed | stale | never | revoked: the one word for the list."""
        if self.revoked:
            return "revoked"
        if self.last_seen_at is None:
            return "never"
        if self.stale:
            return "stale"
        states = {c.get("state") for c in self.collectors.values()}
        if "failed" in states:
            return "failed"
        if "degraded" in states:
            return "degraded"
        return "ok"


def list_workstations(db: Session, *, room: str | None = None, viewer: Viewer | None = None
                      ) -> list[WorkstationView]:
    """The register; with a `viewer`, only the workstations of the rooms they may see."""
    query = select(Workstation, Room.name).outerjoin(Room, Room.id == Workstation.room_id)
    if room:
        query = query.where(Room.name == room)
    if viewer is not None and viewer.room_ids is not None:
        query = query.where(Workstation.room_id.in_(sorted(viewer.room_ids)))
    now = utcnow()
    views = []
    for ws, room_name in db.execute(query.order_by(Room.name, Workstation.seat, Workstation.hostname)):
        since = (now - ws.last_seen_at).total_seconds() if ws.last_seen_at else None
        health = ws.health or {}
        views.append(WorkstationView(
            id=ws.id, hostname=ws.hostname, seat=ws.seat, room=room_name, last_seen_at=ws.last_seen_at,
            seconds_since_seen=since, stale=since is None or since > STALE_AFTER_S, revoked=ws.token_revoked,
            policy_version=ws.policy_version, agent_version=ws.agent_version,
            collectors=dict(health.get("collectors") or {}), health=health,
        ))
    return views
