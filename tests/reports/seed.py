"""A seeded school week through the real ingest (`POST /api/v1/events`, rules and all).

Week 2026-W48 (23–29 November 2026), five seats in "Lab 1":
  pc-01  healthy all week
  pc-02  full scan started, stopped half-way (no completion); otherwise healthy
  pc-03  enrolled, never reported
  pc-04  two foreign USB sticks refused, one idle lock failed
  pc-05  an unexplained change of a program (integrity finding left open), three blocked
         pages, one report of a bad page
and one server backup on Wednesday.  2026-W47 before it: every reporting seat healthy.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import Workstation

SEATS = ("pc-01", "pc-02", "pc-03", "pc-04", "pc-05")
WEEK = (2026, 48)
ENROLLED = datetime(2026, 10, 1, tzinfo=UTC)
OK = {name: {"state": "ok"} for name in ("proxy", "usb", "idle", "antivirus", "integrity", "network")}


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - timedelta(hours=6)


def healthy_day(day: date, *, policy_version: int | None) -> list[protocol.EventEnvelope]:
    out = []
    for hour in (8, 10, 12, 14, 16):
        out.append(
            protocol.make_event(
                "agent.heartbeat",
                {"agent_version": "0.1.0", "policy_version": policy_version, "collectors": OK},
                occurred_at=local(day, hour),
            )
        )
    out.append(
        protocol.make_event(
            "av.health", {"clamd_reachable": True, "signature_age_days": 0.5}, occurred_at=local(day, 9)
        )
    )
    return out


def seed(api, *, policy_version: int | None = 1) -> dict[str, str]:
    """Enrol the five seats (enrolled on 1 October), post two weeks; {seat: agent_id}."""
    ids, headers = {}, {}
    for seat in SEATS:
        agent_id, h = api.enroll(hostname=seat, seat=seat, room="Lab 1")
        ids[seat], headers[seat] = agent_id, h
    with api.db() as db:
        db.execute(update(Workstation).values(enrolled_at=ENROLLED))
        db.commit()
    for week in (47, 48):
        monday = date.fromisocalendar(2026, week, 1)
        days = [monday + timedelta(days=i) for i in range(5)]
        for seat in ("pc-01", "pc-02", "pc-04", "pc-05"):
            events = (
                [
                    protocol.make_event(
                        "integrity.baseline",
                        {"digest": "d" * 64, "files": 100, "seq": 0},
                        occurred_at=local(monday, 7),
                    )
                ]
                if week == 47
                else []
            )
            for day in days:
                events += healthy_day(day, policy_version=policy_version)
            if not (week == 48 and seat == "pc-02"):
                events.append(
                    protocol.make_event(
                        "av.scan.completed",
                        {
                            "scan_id": f"{seat}-{week}",
                            "kind": "full",
                            "files": 9000,
                            "bytes": 10**9,
                            "threats": 0,
                            "duration_s": 1800.0,
                        },
                        occurred_at=local(days[4], 13),
                    )
                )
            api.post(headers[seat], *events)
    monday = date.fromisocalendar(*WEEK, 1)
    wed, thu = monday + timedelta(days=2), monday + timedelta(days=3)
    api.post(
        headers["pc-02"],
        protocol.make_event(
            "av.scan.started", {"scan_id": "half", "kind": "full"}, occurred_at=local(thu, 11)
        ),
        protocol.make_event(
            "av.scan.progress",
            {"scan_id": "half", "files": 4000, "bytes": 10**8},
            occurred_at=local(thu, 11, 20),
        ),
    )
    stick = {"vendor_id": "0781", "product_id": "5567", "kinds": ["storage"], "serial": "X1"}
    api.post(
        headers["pc-04"],
        protocol.make_event(
            "usb.blocked", {"device": stick, "reason": "not allowed"}, occurred_at=local(wed, 10)
        ),
        protocol.make_event(
            "usb.blocked",
            {"device": {**stick, "serial": "X2"}, "reason": "not allowed"},
            occurred_at=local(thu, 10),
        ),
        protocol.make_event("idle.lock_failed", {"error": "no display"}, occurred_at=local(thu, 12)),
    )
    api.post(
        headers["pc-05"],
        protocol.make_event(
            "integrity.changed",
            {"path": "/usr/bin/nano", "change": "modified", "old_sha256": "a" * 64, "new_sha256": "b" * 64},
            occurred_at=local(wed, 9),
        ),
        *[
            protocol.make_event(
                "web.blocked",
                {"url": f"http://g{i}.example/", "host": f"g{i}.example", "categories": [cat]},
                occurred_at=local(thu, 10, i),
            )
            for i, cat in enumerate(("games", "games", "adult"))
        ],
        protocol.make_event("web.report", {"url": "http://bad.example/x"}, occurred_at=local(thu, 11)),
    )
    with api.db() as db:  # two lessons run on Tuesday and Wednesday, one with an allow-list
        from sqlalchemy import select

        import policy_server.timetable.models  # noqa: F401  (lessons.period_id refers to it)
        from policy_server.db.models import Person, Room
        from policy_server.lessons.models import Lesson

        teacher = Person(username="seed-teacher", role="teacher", password_hash="-")
        db.add(teacher)
        db.flush()
        room = db.scalar(select(Room).where(Room.name == "Lab 1"))
        for i, mode in enumerate(("allow_list", "open")):
            starts = local(monday + timedelta(days=1 + i), 10)
            db.add(
                Lesson(
                    id=f"seedles{i}",
                    room_id=room.id,
                    teacher_id=teacher.id,
                    mode=mode,
                    starts_at=starts,
                    ends_at=starts + timedelta(minutes=45),
                    planned_end=starts + timedelta(minutes=45),
                )
            )
        db.commit()
    with api.db() as db:
        record = audit(db, actor="cli", action="backup.created", target="/backups/b.sqlite", detail={})
        record.at = local(wed, 20)
        db.commit()
    return ids


class ProcessApi:
    """`seed()` against a real `kalkan-server run` process (tests/support/server.py)."""

    def __init__(self, server) -> None:
        self.server = server

    def enroll(self, hostname: str, seat: str | None = None, room: str = "Lab 1") -> tuple[str, dict]:
        agent_id, token = self.server.enroll(hostname, seat=seat, room=room)
        return agent_id, {"Authorization": f"Bearer {token}"}

    def db(self):
        return self.server.db()

    def post(self, headers: dict, *events) -> dict:
        with self.server.client(headers=headers) as client:
            r = client.post("/api/v1/events", json={"events": [e.model_dump(mode="json") for e in events]})
        assert r.status_code == 200, r.text
        return r.json()
