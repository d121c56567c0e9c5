"""The server certificate's rotation: the files, the seats' readiness, the switch.

Files, beside the served certificate (`Settings.cert_path`, `tls/server.crt` + `.key`):

    server.next.crt / .key      the next certificate: announced, not served yet
    server.previous.crt / .key  the one served before the last `activate` (kept, never served)
    server.withdrawn.crt        a next certificate `tls cancel` withdrew (its key is deleted):
                                announced as withdrawn, so the seats drop its pin

Everything here is plain functions on paths and sessions; `policy_server/certs/cli.py` says
it to the person.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.errors import Conflict, KalkanError, NotFound
from policy_server.tls import cert_fingerprint, cert_names, write_server_cert

DEFAULT_SEEN_DAYS = 14  # a seat seen within these days must hold the next pin before `activate`


@dataclass(frozen=True)
class CertFiles:
    """The served, next and previous certificate files of one service."""

    cert: Path
    key: Path

    def _beside(self, kind: str) -> tuple[Path, Path]:
        return (self.cert.with_name(f"{self.cert.stem}.{kind}{self.cert.suffix}"),
                self.key.with_name(f"{self.key.stem}.{kind}{self.key.suffix}"))

    @property
    def next(self) -> tuple[Path, Path]:
        return self._beside("next")

    @property
    def previous(self) -> tuple[Path, Path]:
        return self._beside("previous")

    @property
    def withdrawn(self) -> Path:
        return self._beside("withdrawn")[0]

    @classmethod
    def of(cls, settings) -> CertFiles:
        return cls(Path(settings.cert_path), Path(settings.key_path))


def fingerprint_or_none(path: Path) -> str | None:
    try:
        return cert_fingerprint(path)
    except (OSError, ValueError):
        return None


def next_fingerprint(files: CertFiles) -> str | None:
    """The next certificate's SHA-256 (hex), or None when no rotation is under way."""
    cert, key = files.next
    return fingerprint_or_none(cert) if key.exists() else None


def _is_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _owned_like(path: Path, model: Path) -> None:
    """Give a file made by a command run as root the owner of the served files (the service's
    user, `kalkan-server`, must read the key after `activate`)."""
    if os.geteuid() != 0:
        return
    st = model.stat()
    os.chown(path, st.st_uid, st.st_gid)


@dataclass
class NextCert:
    current: str
    next: str
    dns_names: list[str]
    ip_addresses: list[str]
    replaced: str | None = None  # the fingerprint of a next certificate this one replaced


def make_next(files: CertFiles, *, school_hosts: list[str], extra_names: list[str],
              replace: bool = False) -> NextCert:
    """Make the next certificate: a new key; its names are the served certificate's, every
    school host of the service and `extra_names` (host names or addresses)."""
    if not (files.cert.exists() and files.key.exists()):
        raise NotFound(f"there is no server certificate at {files.cert} yet; start the server once "
                       "(kalkan-server run) or run kalkan-server fingerprint, then rotate",
                       code="tls.no_certificate", params={"path": str(files.cert)})
    existing = next_fingerprint(files)
    if existing and not replace:
        raise Conflict(f"a next certificate exists already ({existing}); the seats may be learning it. "
                       "See kalkan-server tls status, then kalkan-server tls activate; or make another "
                       "with --replace", code="tls.next_exists", params={"fingerprint": existing})
    dns, ips = cert_names(files.cert)
    for raw in [*school_hosts, *extra_names]:
        name = raw.strip().lower().rstrip(".")
        if not name:
            continue
        if _is_address(name):
            ips.append(name)
        else:
            from policy_server.tenancy.schools import check_host

            dns.append(check_host(name))
    next_cert, next_key = files.next
    write_server_cert(next_cert, next_key, dns_names=dns, ip_addresses=ips)
    _owned_like(next_cert, files.cert)
    _owned_like(next_key, files.key)
    files.withdrawn.unlink(missing_ok=True)  # the new announcement replaces the withdrawn pin anyway
    made_dns, made_ips = cert_names(next_cert)
    return NextCert(current=cert_fingerprint(files.cert), next=cert_fingerprint(next_cert),
                    dns_names=made_dns, ip_addresses=made_ips, replaced=existing)


@dataclass
class SeatPins:
    """One enrolled seat and the certificate pins its last heartbeat reported."""

    agent_id: str
    name: str
    room: str | None
    last_seen_at: datetime | None
    pins: list[str]
    school: str = ""

    def holds(self, fingerprint: str) -> bool:
        return fingerprint in self.pins


def seat_pins(db: Session, *, school: str = "") -> list[SeatPins]:
    """Every seat whose token works, with the pins of its last heartbeat (none: an agent
    older than the rotation, or one that has not sent a heartbeat since)."""
    from policy_server.db.models import Workstation

    out = []
    for ws in db.scalars(select(Workstation).where(Workstation.token_revoked.is_(False))
                         .order_by(Workstation.seat, Workstation.hostname)):
        pins = (ws.health or {}).get("tls_pins") or []
        out.append(SeatPins(agent_id=ws.id, name=ws.seat or ws.hostname,
                            room=ws.room.name if ws.room else None, last_seen_at=ws.last_seen_at,
                            pins=[p for p in pins if isinstance(p, str)],
                            school=school))
    return out


@dataclass
class Readiness:
    """The seats against one fingerprint: those that hold it, those seen within `days` that
    do not (they block `activate`), and those not seen within `days` that do not."""

    fingerprint: str
    days: int
    ready: list[SeatPins] = field(default_factory=list)
    waiting: list[SeatPins] = field(default_factory=list)
    absent: list[SeatPins] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.ready) + len(self.waiting) + len(self.absent)


def readiness(seats: list[SeatPins], *, fingerprint: str, days: int, now: datetime) -> Readiness:
    result = Readiness(fingerprint=fingerprint, days=days)
    since = now - timedelta(days=days)
    for seat in seats:
        if seat.holds(fingerprint):
            result.ready.append(seat)
        elif seat.last_seen_at is not None and seat.last_seen_at >= since:
            result.waiting.append(seat)
        else:
            result.absent.append(seat)
    return result


@dataclass
class Activated:
    previous: str
    current: str


def activate(files: CertFiles, *, ready: Readiness, force: bool = False) -> Activated:
    """Make the next certificate the served one (from the server's next start), keeping the
    served one as `previous`.  Refused while seats seen within `ready.days` lack the next pin,
    unless `force`."""
    fingerprint = next_fingerprint(files)
    if fingerprint is None:
        raise NotFound("there is no next certificate to activate; make one with kalkan-server tls rotate",
                       code="tls.no_next")
    if fingerprint != ready.fingerprint:
        raise KalkanError("the next certificate changed while its seats were counted; run the command again",
                          code="tls.next_changed")
    if ready.waiting and not force:
        names = ", ".join(s.name for s in ready.waiting[:20]) + (" …" if len(ready.waiting) > 20 else "")
        raise Conflict(f"{len(ready.waiting)} seat(s) seen in the last {ready.days} days do not hold the "
                       f"next certificate yet: {names}. They would have to be enrolled again. Wait until "
                       "they have been on for a few minutes (kalkan-server tls status), or add --force",
                       code="tls.seats_not_ready",
                       params={"count": len(ready.waiting), "days": ready.days, "names": names})
    previous = cert_fingerprint(files.cert)
    prev_cert, prev_key = files.previous
    next_cert, next_key = files.next
    # copies first (the served files stay whole until the last moment), then two renames
    for src, dst in ((files.cert, prev_cert), (files.key, prev_key)):
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copy2(src, tmp)
        _owned_like(tmp, src)
        os.replace(tmp, dst)
    os.replace(next_key, files.key)
    os.replace(next_cert, files.cert)
    return Activated(previous=previous, current=fingerprint)


def cancel(files: CertFiles) -> str:
    """Withdraw the next certificate (e.g. its key may have leaked before `activate`): its key
    is deleted, its certificate kept as `server.withdrawn.crt`, which every answer then names
    (`Kalkan-Withdrawn-Pin`) so the seats drop the pin.  Returns its fingerprint."""
    fingerprint = next_fingerprint(files)
    if fingerprint is None:
        raise NotFound("there is no next certificate to withdraw; see kalkan-server tls status",
                       code="tls.nothing_to_cancel")
    next_cert, next_key = files.next
    os.replace(next_cert, files.withdrawn)
    next_key.unlink()
    return fingerprint
