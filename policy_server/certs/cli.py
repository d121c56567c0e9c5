"""`kalkan-server tls rotate|status|activate` (called from policy_server/cli.py).

The certificate is the service's (one for every school of a many-schools service), so the
seats counted are those of every school's database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from cryptography import x509

from policy_server.audit import audit
from policy_server.certs import rotation, texts
from policy_server.tls import ensure_server_cert

ACTOR_CLI = "cli"


@contextmanager
def _databases(settings) -> Iterator[list[tuple[str, object]]]:
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


def _all_seats(dbs) -> list[rotation.SeatPins]:
    return [seat for slug, db in dbs for seat in rotation.seat_pins(db, school=slug)]


def _school_hosts(settings) -> list[str]:
    from policy_server.tenancy.schools import load

    return [h for e in load(settings) for h in e.hosts]


def _seat_line(t: Callable[..., str], seat: rotation.SeatPins) -> str:
    name = f"{seat.school}/{seat.name}" if seat.school else seat.name
    if seat.last_seen_at is None:
        return "  " + t(texts.SEAT_NEVER, name=name, room=seat.room or "-")
    seen = f"{seat.last_seen_at:%Y-%m-%d %H:%M} UTC"
    return "  " + t(texts.SEAT, name=name, room=seat.room or "-", seen=seen)


def _seat_json(seat: rotation.SeatPins) -> dict:
    return {"agent_id": seat.agent_id, "seat": seat.name, "school": seat.school, "room": seat.room,
            "last_seen_at": seat.last_seen_at.isoformat() if seat.last_seen_at else None, "pins": seat.pins}


def run(args, settings, t: Callable[..., str]) -> int:
    settings.ensure_state_dir()
    files = rotation.CertFiles.of(settings)
    if args.tls_command == "rotate":
        return _rotate(args, settings, files, t)
    if args.tls_command == "status":
        return _status(args, settings, files, t)
    if args.tls_command == "cancel":
        return _cancel(args, settings, files, t)
    return _activate(args, settings, files, t)


def _cancel(args, settings, files: rotation.CertFiles, t) -> int:
    withdrawn = rotation.cancel(files)
    with _databases(settings) as dbs:
        for _slug, db in dbs:
            audit(db, actor=ACTOR_CLI, action="tls.next_withdrawn", target="tls/server.withdrawn.crt",
                  detail={"new_certificate": withdrawn, "clauses": ["000 §3.2"]})
            db.commit()
    if args.json:
        print(json.dumps({"withdrawn": withdrawn}))
        return 0
    print(t(texts.CANCELLED, fingerprint=withdrawn))
    return 0


def _rotate(args, settings, files: rotation.CertFiles, t) -> int:
    if settings.tls and not files.cert.exists():  # as `run` would make it: rotate from a known start
        ensure_server_cert(files.cert, files.key, extra_names=[
            h for h in _school_hosts(settings) if not h[:1].isdigit() and ":" not in h])
    made = rotation.make_next(files, school_hosts=_school_hosts(settings), extra_names=args.name or [],
                              replace=args.replace)
    with _databases(settings) as dbs:
        for _slug, db in dbs:  # every school's audit log: its seats pin this certificate
            audit(db, actor=ACTOR_CLI, action="tls.next_made", target="tls/server.next.crt",
                  detail={"certificate": made.current, "new_certificate": made.next,
                          "names": made.dns_names + made.ip_addresses, "replaced": made.replaced,
                          "clauses": ["000 §3.2"]})
            db.commit()
    if args.json:
        print(json.dumps({"served": made.current, "next": made.next, "names": made.dns_names,
                          "addresses": made.ip_addresses, "replaced": made.replaced}))
        return 0
    print(t(texts.MADE))
    print("  " + t(texts.SERVED_NOW, fingerprint=made.current))
    print("  " + t(texts.NEXT, fingerprint=made.next))
    print("  " + t(texts.NAMES, names=", ".join(made.dns_names + made.ip_addresses)))
    if made.replaced:
        print(t(texts.REPLACED, fingerprint=made.replaced))
    print(t(texts.STEPS))
    return 0


def _not_after(path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return f"{cert.not_valid_after_utc:%Y-%m-%d}"


def _status(args, settings, files: rotation.CertFiles, t) -> int:
    served = rotation.fingerprint_or_none(files.cert)
    upcoming = rotation.next_fingerprint(files)
    previous = rotation.fingerprint_or_none(files.previous[0])
    withdrawn = rotation.fingerprint_or_none(files.withdrawn)
    now = datetime.now(UTC)
    with _databases(settings) as dbs:
        seats = _all_seats(dbs)
    target = upcoming or served
    ready = rotation.readiness(seats, fingerprint=target, days=args.days, now=now) if target else None
    if args.json:
        out = {"served": served, "next": upcoming, "previous": previous, "withdrawn": withdrawn,
               "days": args.days}
        if ready is not None:
            out.update(seats=ready.total, ready=[_seat_json(s) for s in ready.ready],
                       waiting=[_seat_json(s) for s in ready.waiting],
                       absent=[_seat_json(s) for s in ready.absent])
        print(json.dumps(out))
        return 0
    if served:
        print(t(texts.SERVED, fingerprint=served, path=files.cert, until=_not_after(files.cert)))
    print(t(texts.NEXT_CERT, fingerprint=upcoming, path=files.next[0]) if upcoming else t(texts.NO_NEXT))
    if previous:
        print(t(texts.PREVIOUS, fingerprint=previous, path=files.previous[0]))
    if withdrawn:
        print(t(texts.WITHDRAWN, fingerprint=withdrawn))
    if ready is None:
        return 0
    print(t(texts.READY_NEXT if upcoming else texts.READY_SERVED, ready=len(ready.ready), total=ready.total))
    if upcoming:
        if ready.waiting:
            print(t(texts.WAITING, days=args.days))
            for seat in ready.waiting:
                print(_seat_line(t, seat))
        if ready.absent:
            print(t(texts.ABSENT, days=args.days))
            for seat in ready.absent:
                print(_seat_line(t, seat))
    elif ready.waiting or ready.absent:
        print(t(texts.ABSENT_SERVED))
        for seat in ready.waiting + ready.absent:
            print(_seat_line(t, seat))
    return 0


def _activate(args, settings, files: rotation.CertFiles, t) -> int:
    upcoming = rotation.next_fingerprint(files)
    with _databases(settings) as dbs:
        ready = rotation.readiness(_all_seats(dbs), fingerprint=upcoming or "", days=args.days,
                                   now=datetime.now(UTC))
        done = rotation.activate(files, ready=ready, force=args.force)
        for _slug, db in dbs:
            audit(db, actor=ACTOR_CLI, action="tls.activated", target="tls/server.crt",
                  detail={"certificate": done.current, "previous": done.previous,
                          "forced": bool(args.force and ready.waiting),
                          "seats": [s.name for s in ready.waiting + ready.absent][:200],
                          "clauses": ["000 §3.2"]})
            db.commit()
    if args.json:
        print(json.dumps({"served": done.current, "previous": done.previous,
                          "not_ready": [_seat_json(s) for s in ready.waiting + ready.absent]}))
        return 0
    print(t(texts.ACTIVATED, fingerprint=done.current, previous=done.previous, path=files.previous[0]))
    print(t(texts.RESTART))
    print(t(texts.REPLICAS))
    if ready.waiting:
        print(t(texts.FORCED, count=len(ready.waiting)))
    if ready.absent:
        print(t(texts.ABSENT_AFTER, count=len(ready.absent)))
    for seat in ready.waiting + ready.absent:
        print(_seat_line(t, seat))
    return 0
