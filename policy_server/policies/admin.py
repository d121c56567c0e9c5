"""Policy changes made by people: USB allow-list, accepted integrity changes, school-wide bans.

Each is a pure change of the bundle applied through `amend_policy` (new version, audit,
push).  Lessons and a teacher's bans live in `policy_server/lessons` (they end with the
lesson); the bans here are the responsible person's, until a set time, for every room.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import Event, Person, Role, utcnow
from policy_server.errors import Forbidden, InvalidInput, NotFound
from policy_server.policies.service import amend_policy, current_bundle

MAX_BAN = timedelta(days=30)


def _event(db: Session, event_id: str, types: tuple[str, ...]) -> Event:
    event = db.get(Event, event_id)
    if event is None:
        raise NotFound(f"event {event_id} does not exist; copy the id from the incident page")
    if event.type not in types:
        raise InvalidInput(
            f"event {event_id} is a {event.type!r} event; this needs one of: {', '.join(types)}"
        )
    return event


def allow_usb(
    db: Session,
    *,
    actor: Person,
    event_id: str | None = None,
    vendor_id: str | None = None,
    product_id: str | None = None,
    serial: str | None = None,
    note: str = "",
    any_serial: bool = False,
) -> protocol.PolicyBundle:
    """Add a device to the USB allow-list, from an observed `usb.*` event or by its ids."""
    if event_id:
        device = _event(db, event_id, ("usb.blocked", "usb.connected", "usb.allowed")).data["device"]
        vendor_id, product_id = device["vendor_id"], device["product_id"]
        serial = None if any_serial else device.get("serial")
    if not vendor_id or not product_id:
        raise InvalidInput(
            "give either an observed USB event id or the vendor_id and product_id (4 hex digits)"
        )
    try:
        entry = protocol.UsbAllowEntry(
            vendor_id=vendor_id.lower(),
            product_id=product_id.lower(),
            serial=serial,
            note=note,
            added_by=actor.username,
        )
    except ValueError as exc:
        raise InvalidInput(
            f"USB ids not valid: {exc}; vendor_id and product_id are 4 hex digits like '0781'"
        ) from None

    def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
        kept = [
            e
            for e in bundle.usb.allow
            if (e.vendor_id, e.product_id, e.serial) != (entry.vendor_id, entry.product_id, entry.serial)
        ]
        bundle.usb.allow = [*kept, entry]
        return bundle

    return amend_policy(
        db, actor=actor.username, comment=f"USB allow {vendor_id}:{product_id} {serial or '*'}", change=change
    )


def accept_integrity_change(db: Session, *, actor: Person, event_id: str) -> protocol.PolicyBundle:
    """Mark a detected change as authorised (000 §4.2)."""
    data = _event(db, event_id, ("integrity.changed",)).data
    accepted = protocol.AcceptedChange(
        path=data["path"],
        sha256=None if data["change"] == "removed" else data.get("new_sha256"),
        accepted_at=utcnow(),
        by=actor.username,
    )

    def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
        bundle.integrity.accepted = [a for a in bundle.integrity.accepted if a.path != accepted.path] + [
            accepted
        ]
        return bundle

    return amend_policy(
        db, actor=actor.username, comment=f"integrity change accepted: {accepted.path}", change=change
    )


def ban(
    db: Session,
    *,
    actor: Person,
    until: datetime,
    seat: str | None = None,
    os_user: str | None = None,
    reason: str = "",
) -> tuple[protocol.PolicyBundle, str]:
    """Forbid a seat or an OS user further internet work until `until` (000 §7.3)."""
    if not seat and not os_user:
        raise InvalidInput("a ban needs a seat or an OS user")
    now = utcnow()
    if until <= now or until - now > MAX_BAN:
        raise InvalidInput("a ban must end in the future and last at most 30 days")
    if actor.role != Role.admin:
        raise Forbidden("only the responsible person bans outside a lesson; a teacher bans a seat "
                        "from the lesson's page (policy_server/lessons)")
    ban_id = uuid.uuid4().hex[:12]
    entry = protocol.Ban(
        id=ban_id, seat=seat, os_user=os_user, until=until, reason=reason[:300], by=actor.username
    )

    def change(b: protocol.PolicyBundle) -> protocol.PolicyBundle:
        b.bans = [x for x in b.bans if x.until > now] + [entry]  # expired bans leave the bundle
        return b

    new = amend_policy(
        db, actor=actor.username, comment=f"ban {seat or ''} {os_user or ''}".strip(), change=change
    )
    return new, ban_id


def lift_ban(db: Session, *, actor: Person, ban_id: str) -> protocol.PolicyBundle:
    entry = next((b for b in current_bundle(db).bans if b.id == ban_id), None)
    if entry is None:
        raise NotFound(f"ban {ban_id} is not in the current policy (it may have expired)")
    if actor.role != Role.admin and entry.by != actor.username:
        raise Forbidden("only the teacher who made the ban or the responsible person can lift it")

    def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
        bundle.bans = [b for b in bundle.bans if b.id != ban_id]
        return bundle

    return amend_policy(db, actor=actor.username, comment=f"ban {ban_id} lifted", change=change)
