"""The server certificate's rotation as the service both the command line
(`kalkan-server tls …`, policy_server/certs/cli.py) and the console page (/server-certificate,
policy_server/certs/pages.py) call: one code path for the files, the seats' readiness and the
audit records (000 §3.2).

`dbs` is a list of (school short name, session): the command line passes every school's
database of a many-schools service (`databases(settings)`: the certificate is the service's,
so are its seats); the page passes its own school's session.  Each function audits into every
database it is given and commits them; the files change before the audit, so a refused change
(a `KalkanError`) leaves both as they were.

A file the server may not write or read (the `tls/` folder owned by root, a full disk) is a
`KalkanError` `tls.files_not_writable` naming the path, never an OSError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography import x509

from policy_server.audit import audit
from policy_server.certs import rotation
from policy_server.errors import Conflict, KalkanError
from policy_server.tls import cert_names, ensure_server_cert

CLAUSES = ["000 §3.2"]  # the server's certificate and key: like the other security actions


class FilesNotWritable(KalkanError):
    status_code = 409  # the server's own files: a message naming the folder and the fix, never a 5xx


@contextmanager
def databases(settings) -> Iterator[list[tuple[str, object]]]:
    """(school short name, session) for each database whose seats pin this certificate: the
    school's own, or every school's of a many-schools service."""
    from policy_server.db import migrate
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.tenancy.schools import load, school_settings

    schools = load(settings)
    urls = ([(e.slug, school_settings(settings, e).database_url) for e in schools] if schools
            else [("", settings.database_url)])
    engines, sessions = [], []
    try:
        for slug, url in urls:
            engine = make_engine(url)
            engines.append(engine)
            migrate.upgrade(engine)
            sessions.append((slug, make_sessionmaker(engine)()))
        yield sessions
    finally:
        for _slug, db in sessions:
            db.close()
        for engine in engines:
            engine.dispose()


def shared_by_schools(settings) -> bool:
    """True for one school's app of a many-schools service: the certificate is the service's
    (`school_settings` puts the school in `<service>/schools/<slug>` and the certificate in
    the service's `tls/`), so only the service's operator rotates it, with the command line."""
    from policy_server.tenancy.schools import REGISTRY_NAME

    state = Path(settings.state_dir)
    return state.parent.name == "schools" and (state.parent.parent / REGISTRY_NAME).exists()


def all_seats(dbs) -> list[rotation.SeatPins]:
    return [seat for slug, db in dbs for seat in rotation.seat_pins(db, school=slug)]


def school_hosts(settings) -> list[str]:
    from policy_server.tenancy.schools import load

    return [h for e in load(settings) for h in e.hosts]


@contextmanager
def _files_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        where = Path(exc.filename) if getattr(exc, "filename", None) else path
        raise FilesNotWritable(
            f"the server cannot write the certificate files in {where.parent} ({exc.strerror or exc}); "
            "give the user the server runs as (kalkan-server) the right to write there: "
            f"chown -R kalkan-server: {where.parent}",
            code="tls.files_not_writable", params={"folder": str(where.parent)}) from None


def rotate(settings, dbs, *, actor: str, extra_names: list[str] | None = None,
           replace: bool = False, served_fingerprint: str | None = None) -> rotation.NextCert:
    """`tls rotate` / "Prepare the next certificate": a new key beside the served one,
    announced to the seats at once (no restart).  Refused (`tls.restart_first`) while the
    running server still serves another certificate than the file's (`served_fingerprint`:
    activated, not restarted yet)."""
    settings.ensure_state_dir()
    files = rotation.CertFiles.of(settings)
    on_file = rotation.fingerprint_or_none(files.cert)
    if served_fingerprint and on_file and served_fingerprint != on_file:
        raise Conflict("the server has not been restarted since the last certificate was activated: it "
                       f"still serves {served_fingerprint}; restart it first (systemctl restart "
                       "kalkan-server), then make the next certificate",
                       code="tls.restart_first", params={"fingerprint": served_fingerprint})
    hosts = school_hosts(settings)
    with _files_errors(files.cert):
        if settings.tls and not files.cert.exists():  # as `run` would make it: rotate from a known start
            ensure_server_cert(files.cert, files.key,
                               extra_names=[h for h in hosts if not h[:1].isdigit() and ":" not in h])
        made = rotation.make_next(files, school_hosts=hosts, extra_names=extra_names or [], replace=replace)
    for _slug, db in dbs:  # every school's audit log: its seats pin this certificate
        audit(db, actor=actor, action="tls.next_made", target="tls/server.next.crt",
              detail={"certificate": made.current, "new_certificate": made.next,
                      "names": made.dns_names + made.ip_addresses, "replaced": made.replaced,
                      "clauses": CLAUSES})
        db.commit()
    return made


def cancel(settings, dbs, *, actor: str) -> str:
    """`tls cancel` / "Withdraw": the next certificate's key is deleted, the seats drop its pin."""
    files = rotation.CertFiles.of(settings)
    with _files_errors(files.cert):
        withdrawn = rotation.cancel(files)
    for _slug, db in dbs:
        audit(db, actor=actor, action="tls.next_withdrawn", target="tls/server.withdrawn.crt",
              detail={"new_certificate": withdrawn, "clauses": CLAUSES})
        db.commit()
    return withdrawn


@dataclass
class Activation:
    done: rotation.Activated
    ready: rotation.Readiness
    forced: bool
    previous_path: Path


def activate(settings, dbs, *, actor: str, days: int = rotation.DEFAULT_SEEN_DAYS,
             force: bool = False, now: datetime | None = None) -> Activation:
    """`tls activate` / "Activate": the next certificate becomes the served one from the
    server's next start.  Refused (`tls.seats_not_ready`, listing them) while seats seen within
    `days` lack its pin, unless `force`."""
    files = rotation.CertFiles.of(settings)
    upcoming = rotation.next_fingerprint(files)
    ready = rotation.readiness(all_seats(dbs), fingerprint=upcoming or "", days=days,
                               now=now or datetime.now(UTC))
    with _files_errors(files.cert):
        done = rotation.activate(files, ready=ready, force=force)
    forced = bool(force and ready.waiting)
    for _slug, db in dbs:
        audit(db, actor=actor, action="tls.activated", target="tls/server.crt",
              detail={"certificate": done.current, "previous": done.previous, "forced": forced,
                      "seats": [s.name for s in ready.waiting + ready.absent][:200], "clauses": CLAUSES})
        db.commit()
    return Activation(done=done, ready=ready, forced=forced, previous_path=files.previous[0])


@dataclass
class CertInfo:
    fingerprint: str
    path: Path
    valid_until: date | None
    names: list[str] = field(default_factory=list)


@dataclass
class Status:
    """`tls status` / the page: the certificates and the seats against the one that matters
    (the next one during a rotation, else the served one)."""

    served: CertInfo | None
    next: CertInfo | None
    previous: CertInfo | None
    withdrawn: str | None
    days: int
    ready: rotation.Readiness | None
    restart_needed: bool = False  # activated: this process still serves another certificate


def _info(path: Path) -> CertInfo | None:
    fingerprint = rotation.fingerprint_or_none(path)
    if fingerprint is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        until = cert.not_valid_after_utc.date()
        dns, ips = cert_names(path)
    except (OSError, ValueError):
        until, dns, ips = None, [], []
    return CertInfo(fingerprint=fingerprint, path=path, valid_until=until, names=dns + ips)


def status(settings, dbs, *, days: int = rotation.DEFAULT_SEEN_DAYS, now: datetime | None = None,
           served_fingerprint: str | None = None) -> Status:
    """`served_fingerprint`: the certificate this process serves (policy_server/certs/served.py),
    when known; differing from the file's, a restart is due."""
    files = rotation.CertFiles.of(settings)
    served = _info(files.cert)
    upcoming = _info(files.next[0]) if rotation.next_fingerprint(files) else None
    target = upcoming or served
    ready = (rotation.readiness(all_seats(dbs), fingerprint=target.fingerprint, days=days,
                                now=now or datetime.now(UTC)) if target else None)
    return Status(served=served, next=upcoming, previous=_info(files.previous[0]),
                  withdrawn=rotation.fingerprint_or_none(files.withdrawn), days=days, ready=ready,
                  restart_needed=bool(served and served_fingerprint
                                      and served_fingerprint != served.fingerprint))
