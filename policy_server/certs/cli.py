"""`kalkan-server tls rotate|status|activate` (called from policy_server/cli.py).

The certificate is the service's (one for every school of a many-schools service), so the
seats counted are those of every school's database."""

from __future__ import annotations

import json
from collections.abc import Callable

from policy_server.certs import rotation, service, texts

ACTOR_CLI = "cli"


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
    with service.databases(settings) as dbs:
        withdrawn = service.cancel(settings, dbs, actor=ACTOR_CLI)
    if args.json:
        print(json.dumps({"withdrawn": withdrawn}))
        return 0
    print(t(texts.CANCELLED, fingerprint=withdrawn))
    return 0


def _rotate(args, settings, files: rotation.CertFiles, t) -> int:
    from policy_server.certs.served import recorded_served

    with service.databases(settings) as dbs:
        made = service.rotate(settings, dbs, actor=ACTOR_CLI, extra_names=args.name or [],
                              replace=args.replace, served_fingerprint=recorded_served(files.cert))
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


def _status(args, settings, files: rotation.CertFiles, t) -> int:
    with service.databases(settings) as dbs:
        now = service.status(settings, dbs, days=args.days)
    served, upcoming = now.served, now.next
    previous = now.previous.fingerprint if now.previous else None
    ready = now.ready
    if args.json:
        out = {"served": served.fingerprint if served else None,
               "next": upcoming.fingerprint if upcoming else None, "previous": previous,
               "withdrawn": now.withdrawn, "days": args.days}
        if ready is not None:
            out.update(seats=ready.total, ready=[_seat_json(s) for s in ready.ready],
                       waiting=[_seat_json(s) for s in ready.waiting],
                       absent=[_seat_json(s) for s in ready.absent])
        print(json.dumps(out))
        return 0
    if served:
        print(t(texts.SERVED, fingerprint=served.fingerprint, path=served.path,
                until=f"{served.valid_until:%Y-%m-%d}" if served.valid_until else "?"))
    print(t(texts.NEXT_CERT, fingerprint=upcoming.fingerprint, path=upcoming.path) if upcoming
          else t(texts.NO_NEXT))
    if previous:
        print(t(texts.PREVIOUS, fingerprint=previous, path=files.previous[0]))
    if now.withdrawn:
        print(t(texts.WITHDRAWN, fingerprint=now.withdrawn))
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
    with service.databases(settings) as dbs:
        result = service.activate(settings, dbs, actor=ACTOR_CLI, days=args.days, force=args.force)
    done, ready = result.done, result.ready
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
