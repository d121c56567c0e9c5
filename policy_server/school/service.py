"""School and rooms.  A server serves one school (the first row of `schools`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import PersonRoom, Room, School, Workstation, utcnow
from policy_server.errors import Conflict, InvalidInput, NotFound
from policy_server.school.models import RoomLayout

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


def get_school(db: Session) -> School | None:
    return db.scalar(select(School).order_by(School.id).limit(1))


def ensure_school(db: Session, *, name: str, actor: str, district: str = "") -> School:
    school = get_school(db)
    if school is None:
        school = School(name=name, district=district)
        db.add(school)
        db.flush()
        audit(db, actor=actor, action="school.create", target=name)
    return school


def find_room(db: Session, name: str) -> Room | None:
    return db.scalar(select(Room).where(Room.name == name))


def get_room(db: Session, name: str) -> Room:
    room = find_room(db, name)
    if room is None:
        known = ", ".join(db.scalars(select(Room.name).order_by(Room.name))) or "none yet"
        raise NotFound(f"room {name!r} does not exist (rooms: {known}); create it first with "
                       "`kalkan-server demo` or the room form")
    return room


def ensure_room(db: Session, *, name: str, actor: str) -> Room:
    if not ROOM_NAME.match(name):
        raise InvalidInput(f"room name {name!r} is not allowed: letters, digits, space, '.', '_' or '-'")
    room = find_room(db, name)
    if room is None:
        school = get_school(db)
        if school is None:
            raise NotFound("no school is set up yet; run `kalkan-server demo` or create the school first")
        room = Room(school_id=school.id, name=name)
        db.add(room)
        db.flush()
        audit(db, actor=actor, action="room.create", target=name)
    return room


def list_rooms(db: Session) -> list[Room]:
    return list(db.scalars(select(Room).order_by(Room.name)))


def link_person_to_room(db: Session, *, person_id: int, room: str, actor: str) -> Room:
    """A teacher works in `room` (table `person_rooms`): they see its seats' incidents and
    workstations (000 §7.3, docs/security.md).  Idempotent; the caller commits."""
    room_row = get_room(db, room)
    if db.get(PersonRoom, (person_id, room_row.id)) is None:
        db.add(PersonRoom(person_id=person_id, room_id=room_row.id))
        db.flush()
        audit(db, actor=actor, action="person.room_linked", target=f"person:{person_id}",
              detail={"room": room})
    return room_row


# ----------------------------------------------------------------------------- the console (issue 11)
# Rooms with a seat layout, the seats' workstations, enrolment codes made from a page, retiring
# and re-enrolling a seat.  A retired workstation keeps its row, events and incidents (its
# token is revoked); the seat's next workstation is a new row (history kept, 004 §3.6).

MAX_ROWS, MAX_COLUMNS = 12, 12
SEAT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class SeatView:
    name: str
    workstation: Workstation | None  # the enrolled (not retired) workstation on this seat


@dataclass
class RoomView:
    room: Room
    layout: RoomLayout | None
    seats: list[SeatView]  # row by row, from the layout
    extra: list[Workstation]  # enrolled here on a seat the layout does not name
    retired: list[Workstation]

    @property
    def grid(self) -> list[list[SeatView]]:
        if not self.layout:
            return []
        cols = self.layout.columns
        return [self.seats[i:i + cols] for i in range(0, len(self.seats), cols)]

    @property
    def enrolled(self) -> int:
        return sum(1 for s in self.seats if s.workstation) + len(self.extra)


def default_seat_names(room_name: str, rows: int, columns: int) -> list[str]:
    prefix = re.sub(r"[^a-z0-9]+", "", room_name.lower())[:20] or "seat"
    return [f"{prefix}-{n:02d}" for n in range(1, rows * columns + 1)]


def _check_layout(rows: int, columns: int, seat_names: list[str]) -> None:
    if not (1 <= rows <= MAX_ROWS and 1 <= columns <= MAX_COLUMNS):
        raise InvalidInput(f"rows and columns must be between 1 and {MAX_ROWS}, not {rows} × {columns}",
                           code="room.bad_layout", params={"rows": rows, "columns": columns,
                                                           "maximum": MAX_ROWS})
    if len(seat_names) != rows * columns:
        raise InvalidInput(f"{rows} × {columns} seats need {rows * columns} names, not {len(seat_names)}",
                           code="room.seat_count",
                           params={"needed": rows * columns, "given": len(seat_names)})
    for name in seat_names:
        if not SEAT_NAME.match(name):
            raise InvalidInput(f"seat name {name!r} is not allowed: letters, digits, '.', '_' or '-'",
                               code="room.bad_seat_name", params={"name": name})
    doubles = sorted({n for n in seat_names if seat_names.count(n) > 1})
    if doubles:
        raise InvalidInput(f"seat names appear twice: {', '.join(doubles)}", code="room.seat_twice",
                           params={"names": ", ".join(doubles)})


def parse_seat_names(text: str) -> list[str]:
    return [n.strip() for n in re.split(r"[,;\s]+", text or "") if n.strip()]


def create_room_with_layout(db: Session, *, actor: str, name: str, rows: int, columns: int) -> Room:
    name = name.strip()
    if not ROOM_NAME.match(name):
        raise InvalidInput(f"room name {name!r} is not allowed: letters, digits, space, '.', '_' or '-'",
                           code="room.bad_name", params={"name": name})
    if find_room(db, name) is not None:
        raise Conflict(f"a room named {name!r} exists already; choose another name",
                       code="room.duplicate", params={"name": name})
    seat_names = default_seat_names(name, rows, columns)
    _check_layout(rows, columns, seat_names)
    if get_school(db) is None:
        ensure_school(db, name="School", actor=actor)
    room = ensure_room(db, name=name, actor=actor)
    db.add(RoomLayout(room_id=room.id, rows=rows, columns=columns, seat_names=seat_names))
    audit(db, actor=actor, action="room.layout", target=name,
          detail={"rows": rows, "columns": columns, "seats": len(seat_names)})
    return room


def set_layout(db: Session, *, actor: str, room_id: int, rows: int, columns: int,
               seat_names: list[str] | None = None) -> RoomLayout:
    room = db.get(Room, room_id)
    if room is None:
        raise NotFound(f"no room with id {room_id}", code="room.not_found", params={"id": room_id})
    layout = db.get(RoomLayout, room_id)
    if not seat_names:
        old = list(layout.seat_names) if layout else []
        fresh = default_seat_names(room.name, rows, columns)
        seat_names = (old + [n for n in fresh if n not in old])[:rows * columns]
    _check_layout(rows, columns, seat_names)
    if layout is None:
        layout = RoomLayout(room_id=room_id, rows=rows, columns=columns, seat_names=seat_names)
        db.add(layout)
    else:
        before = {"rows": layout.rows, "columns": layout.columns, "seats": list(layout.seat_names)}
        layout.rows, layout.columns, layout.seat_names = rows, columns, list(seat_names)
        layout.updated_at = utcnow()
        if before == {"rows": rows, "columns": columns, "seats": list(seat_names)}:
            return layout
    audit(db, actor=actor, action="room.layout", target=room.name,
          detail={"rows": rows, "columns": columns, "seats": list(seat_names)})
    return layout


def room_views(db: Session) -> list[RoomView]:
    rooms = list_rooms(db)
    layouts = {lay.room_id: lay for lay in db.scalars(select(RoomLayout))}
    stations: dict[int | None, list[Workstation]] = {}
    for ws in db.scalars(select(Workstation).order_by(Workstation.enrolled_at)):
        stations.setdefault(ws.room_id, []).append(ws)
    return [_room_view(room, layouts.get(room.id), stations.get(room.id, [])) for room in rooms]


def room_view(db: Session, room_id: int) -> RoomView:
    room = db.get(Room, room_id)
    if room is None:
        raise NotFound(f"no room with id {room_id}", code="room.not_found", params={"id": room_id})
    stations = list(db.scalars(select(Workstation).where(Workstation.room_id == room_id)
                               .order_by(Workstation.enrolled_at)))
    return _room_view(room, db.get(RoomLayout, room_id), stations)


def _room_view(room: Room, layout: RoomLayout | None, stations: list[Workstation]) -> RoomView:
    active = {}
    for ws in stations:
        if not ws.token_revoked:
            active[ws.seat or f"?{ws.id}"] = ws  # the newest enrolment on a seat wins
    names = list(layout.seat_names) if layout else []
    seats = [SeatView(n, active.pop(n, None)) for n in names]
    return RoomView(room, layout, seats, extra=list(active.values()),
                    retired=[ws for ws in stations if ws.token_revoked])


def retire_workstation(db: Session, *, actor: str, agent_id: str, reason: str = "") -> Workstation:
    """Take a workstation off its seat: its token is revoked (an open push stream is closed by
    the agents' service), its events and incidents stay."""
    from policy_server.agents.service import revoke_agent

    ws = revoke_agent(db, agent_id=agent_id, actor=actor)
    audit(db, actor=actor, action="seat.retire", target=ws.seat or ws.hostname,
          detail={"agent_id": agent_id, "hostname": ws.hostname, "reason": reason.strip()[:300]})
    return ws


@dataclass
class EnrolmentSlip:
    """What the page shows once after making a code: the code and the exact commands."""

    code: str
    room: str | None
    uses: int
    expires_at: datetime
    server_url: str
    fingerprint: str | None
    seats: list[str]
    pin: str | None = None  # the server's public-key pin (operations.seat.pubkey_pin); None without TLS

    def install(self, seat: str | None = None) -> str | None:
        """The command for a new PC: fetch the package from this server (pinned), install it, enrol,
        start the agent (docs/operations.md "Installing a seat"); None without TLS or a room."""
        if not self.pin or not self.room:
            return None
        from policy_server.operations.seat import install_command

        return install_command(self.room, self.code, self.server_url, self.pin, seat)

    def command(self, seat: str | None = None, *, force: bool = False) -> str:
        parts = ["sudo", "kalkan-agent", "enroll", "--server", self.server_url, "--code", self.code]
        if self.fingerprint:
            parts += ["--fingerprint", self.fingerprint]
        if seat:
            parts += ["--seat", seat]
        if force:
            parts.append("--force")
        return " ".join(parts)


def make_enrolment(db: Session, *, actor: str, room_id: int | None, uses: int, expires: str,
                   server_url: str, fingerprint: str | None, seats: list[str] | None = None,
                   pin: str | None = None) -> EnrolmentSlip:
    from policy_server.agents.service import create_enrollment_code, parse_expiry

    room = db.get(Room, room_id) if room_id else None
    if room_id and room is None:
        raise NotFound(f"no room with id {room_id}", code="room.not_found", params={"id": room_id})
    expires_at = parse_expiry(expires)
    code = create_enrollment_code(db, actor=actor, room=room.name if room else None, uses=uses,
                                  expires_at=expires_at)
    if seats is None and room is not None:
        view = room_view(db, room.id)
        seats = [s.name for s in view.seats if s.workstation is None][:uses]
    return EnrolmentSlip(code, room.name if room else None, uses, expires_at, server_url, fingerprint,
                         seats or [], pin)
