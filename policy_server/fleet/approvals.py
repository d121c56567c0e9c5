"""Approvals (issue 11): USB devices seen and blocked, integrity changes waiting for acceptance.

The queue is read from the recent `usb.blocked` and `integrity.changed` events (type + time
index, `QUEUE_DAYS` back) minus what the policy already allows or accepts, minus devices the
responsible person decided to keep blocked (an audit record `usb.keep_blocked`).  Decisions
go through the existing policy amendment (`policies.admin.allow_usb`, and one `amend_policy`
for a whole package's accepted changes, 000 §4.2, §6.5); the open incidents made of the
decided events are resolved with a note naming the decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import (
    AuditRecord,
    Event,
    Incident,
    IncidentEvent,
    IncidentStatus,
    Room,
    Workstation,
    utcnow,
)
from policy_server.errors import InvalidInput, NotFound
from policy_server.incidents import service as incidents
from policy_server.policies import admin
from policy_server.policies.service import amend_policy, current_bundle
from policy_server.scope import Viewer

QUEUE_DAYS = 30
MAX_QUEUE_EVENTS = 5000
NO_PACKAGE = ""


@dataclass
class UsbItem:
    vendor_id: str
    product_id: str
    serial: str | None
    name: str
    kinds: list[str]
    seats: set[str] = field(default_factory=set)
    count: int = 0
    last_seen: datetime | None = None
    event_id: str = ""  # the newest event (the decision refers to it)

    @property
    def key(self) -> str:
        return f"{self.vendor_id}:{self.product_id}:{self.serial or ''}"


@dataclass
class IntegrityItem:
    event_id: str
    path: str
    change: str
    package: str
    seat: str
    occurred_at: datetime
    by_package_manager: bool
    new_sha256: str | None


@dataclass
class PackageGroup:
    package: str  # NO_PACKAGE for changes no package explains
    items: list[IntegrityItem]

    @property
    def seats(self) -> list[str]:
        return sorted({i.seat for i in self.items})

    @property
    def files(self) -> int:
        return len({i.path for i in self.items})


def _where(db: Session, agent_ids: Iterable[str]) -> dict[str, str]:
    ids = list(set(agent_ids))
    if not ids:
        return {}
    rows = db.execute(select(Workstation.id, Workstation.hostname, Workstation.seat, Room.name)
                      .outerjoin(Room, Room.id == Workstation.room_id).where(Workstation.id.in_(ids)))
    return {i: " / ".join(x for x in (room, seat or host) if x) for i, host, seat, room in rows}


def _kept_blocked(db: Session) -> set[str]:
    return set(db.scalars(select(AuditRecord.target).where(AuditRecord.action == "usb.keep_blocked")))


def usb_queue(db: Session, *, now: datetime | None = None) -> list[UsbItem]:
    now = now or utcnow()
    bundle = current_bundle(db)
    allowed = {(a.vendor_id, a.product_id, a.serial) for a in bundle.usb.allow}
    kept = _kept_blocked(db)
    events = db.execute(select(Event.id, Event.agent_id, Event.occurred_at, Event.data, Event.seat)
                        .where(Event.type == "usb.blocked",
                               Event.occurred_at >= now - timedelta(days=QUEUE_DAYS))
                        .order_by(Event.occurred_at.desc()).limit(MAX_QUEUE_EVENTS)).all()
    where = _where(db, (e.agent_id for e in events))
    items: dict[str, UsbItem] = {}
    for event_id, agent_id, when, data, _seat in events:
        dev = (data or {}).get("device") or {}
        vid, pid, serial = dev.get("vendor_id", ""), dev.get("product_id", ""), dev.get("serial")
        if (vid, pid, None) in allowed or (vid, pid, serial) in allowed:
            continue
        name = " ".join(str(x) for x in (dev.get("manufacturer"), dev.get("product")) if x)
        item = items.get(f"{vid}:{pid}:{serial or ''}")
        if item is None:
            item = UsbItem(vid, pid, serial, name, list(dev.get("kinds") or []), last_seen=when,
                           event_id=event_id)
            if item.key in kept:
                continue
            items[item.key] = item
        item.count += 1
        item.seats.add(where.get(agent_id, agent_id[:8]))
    return sorted(items.values(), key=lambda i: i.last_seen or now, reverse=True)


def _accepted(bundle: protocol.PolicyBundle) -> set[tuple[str, str | None]]:
    return {(a.path, a.sha256) for a in bundle.integrity.accepted}


def integrity_queue(db: Session, *, now: datetime | None = None) -> list[PackageGroup]:
    now = now or utcnow()
    accepted = _accepted(current_bundle(db))
    events = db.execute(select(Event.id, Event.agent_id, Event.occurred_at, Event.data)
                        .where(Event.type == "integrity.changed",
                               Event.occurred_at >= now - timedelta(days=QUEUE_DAYS))
                        .order_by(Event.occurred_at.desc()).limit(MAX_QUEUE_EVENTS)).all()
    where = _where(db, (e.agent_id for e in events))
    groups: dict[str, list[IntegrityItem]] = {}
    seen: set[tuple[str, str, str | None]] = set()
    for event_id, agent_id, when, data in events:
        data = data or {}
        sha = None if data.get("change") == "removed" else data.get("new_sha256")
        if (data.get("path"), sha) in accepted or (agent_id, data.get("path"), sha) in seen:
            continue
        seen.add((agent_id, data.get("path"), sha))
        package = data.get("package") or NO_PACKAGE
        groups.setdefault(package, []).append(IntegrityItem(
            event_id, str(data.get("path", "")), str(data.get("change", "")), package,
            where.get(agent_id, agent_id[:8]), when, bool(data.get("by_package_manager")), sha))
    # package updates first (bulk acceptance), unexplained changes last (look at each)
    return sorted((PackageGroup(p, items) for p, items in groups.items()),
                  key=lambda g: (g.package == NO_PACKAGE, g.package))


def _resolve_incidents_of(db: Session, event_ids: list[str], *, viewer: Viewer, note: str,
                          rule_prefix: str) -> list[int]:
    """Resolve the open incidents made of these events (the decision is the resolution)."""
    if not event_ids:
        return []
    ids = set(db.scalars(select(IncidentEvent.incident_id).where(IncidentEvent.event_id.in_(event_ids))))
    resolved = []
    for incident in db.scalars(select(Incident).where(Incident.id.in_(ids),
                                                      Incident.status != IncidentStatus.resolved)):
        if incident.rule.startswith(rule_prefix):
            incidents.resolve(db, incident_id=incident.id, viewer=viewer, reason=note)
            resolved.append(incident.id)
    return resolved


def allow_usb(db: Session, *, viewer: Viewer, event_id: str, scope: str) -> list[int]:
    """Allow the device of a `usb.blocked` event: `scope` 'device' (this serial) or 'model'."""
    if scope not in ("device", "model"):
        raise InvalidInput("choose 'device' or 'model'", code="approval.bad_scope")
    event = db.get(Event, event_id)
    if event is None or not event.type.startswith("usb."):
        raise NotFound(f"no USB event {event_id}", code="approval.no_event", params={"id": event_id})
    dev = (event.data or {}).get("device") or {}
    admin.allow_usb(db, actor=viewer.person, event_id=event_id, any_serial=scope == "model",
                    note=" ".join(str(x) for x in (dev.get("manufacturer"), dev.get("product")) if x)[:200])
    same = _same_device_events(db, dev, any_serial=scope == "model")
    what = "model" if scope == "model" else "device"
    return _resolve_incidents_of(db, same, viewer=viewer, rule_prefix="usb.",
                                 note=f"USB {what} {dev.get('vendor_id')}:{dev.get('product_id')} allowed "
                                      f"by {viewer.name} (000 §6.5)")


def _same_device_events(db: Session, dev: dict, *, any_serial: bool) -> list[str]:
    since = utcnow() - timedelta(days=QUEUE_DAYS)
    out = []
    for event_id, data in db.execute(select(Event.id, Event.data).where(Event.type == "usb.blocked",
                                                                         Event.occurred_at >= since)):
        other = (data or {}).get("device") or {}
        same_model = (other.get("vendor_id"), other.get("product_id")) == (dev.get("vendor_id"),
                                                                            dev.get("product_id"))
        if same_model and (any_serial or other.get("serial") == dev.get("serial")):
            out.append(event_id)
    return out


def keep_blocked(db: Session, *, viewer: Viewer, event_id: str) -> None:
    event = db.get(Event, event_id)
    if event is None or not event.type.startswith("usb."):
        raise NotFound(f"no USB event {event_id}", code="approval.no_event", params={"id": event_id})
    dev = (event.data or {}).get("device") or {}
    key = f"{dev.get('vendor_id')}:{dev.get('product_id')}:{dev.get('serial') or ''}"
    audit(db, actor=viewer.name, action="usb.keep_blocked", target=key,
          detail={"event_id": event_id, "product": dev.get("product")})


def accept_integrity(db: Session, *, viewer: Viewer, event_ids: list[str]) -> tuple[int, list[int]]:
    """Accept these `integrity.changed` events as authorised (one policy amendment for all).

    Returns (changes accepted, incidents resolved)."""
    if not event_ids:
        raise InvalidInput("choose at least one change to accept", code="approval.nothing_chosen")
    events = list(db.scalars(select(Event).where(Event.id.in_(event_ids), Event.type == "integrity.changed")))
    if len(events) != len(set(event_ids)):
        raise NotFound("some of the chosen changes do not exist; reload the page", code="approval.no_event",
                       params={"id": ", ".join(sorted(set(event_ids) - {e.id for e in events}))})
    now = utcnow()
    entries = {}
    for e in events:
        data = e.data or {}
        entries[data["path"]] = protocol.AcceptedChange(
            path=data["path"], sha256=None if data.get("change") == "removed" else data.get("new_sha256"),
            accepted_at=now, by=viewer.name)
    packages = sorted({(e.data or {}).get("package") or "—" for e in events})

    def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
        bundle.integrity.accepted = [a for a in bundle.integrity.accepted if a.path not in entries] + list(
            entries.values())
        return bundle

    amend_policy(db, actor=viewer.name,
                 comment=f"integrity: {len(entries)} change(s) accepted ({', '.join(packages)[:200]})",
                 change=change)
    resolved = _resolve_incidents_of(
        db, [e.id for e in events], viewer=viewer, rule_prefix="integrity.",
        note=f"{len(entries)} change(s) accepted as authorised by {viewer.name} (000 §4.2): "
             f"{', '.join(packages)[:300]}")
    return len(entries), resolved
