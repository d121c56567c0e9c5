"""Console pages with a school year of data: p50/p95 server time (issue 11).

    .venv/bin/python benchmarks/console/run.py [--events 2000000] [--incidents 20000] [--seats 30]
                                               [--requests 40] [--backends sqlite,postgresql]

For each backend, one database with a year of data (heartbeats every few minutes from every
seat, weekly full scans, integrity baselines and changes, USB blocks, idle-lock failures, other
events; 20 000 incidents over the year) and, side by side in the same run, the **baseline**: the
same school (seats, people) with no history.  Each page is requested `--requests` times through
the real app (FastAPI TestClient, logged in as the responsible person) and the time of each
answer is taken; the ratio year/empty says what a year of data costs.  `scan all events` is one
`SELECT count(*)` over the events table: a page that scanned the events would cost at least that.

Writes nothing but its own temporary folder (and a PostgreSQL cluster it starts and stops).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PAGES = ("/fleet", "/incidents", "/incidents?status=new", "/approvals", "/audit", "/people", "/rooms", "SEAT")
HEALTH = {
    "agent_version": "0.3.0",
    "policy_version": None,
    "outbox_depth": 0,
    "collectors": {
        name: {"state": "ok", "detail": ""}
        for name in ("proxy", "antivirus", "integrity", "usb", "idle", "network")
    },
}


def populate(app, *, events: int, incidents: int, seats: int, seed: int = 11) -> list[str]:
    """A school with `seats` workstations; `events` and `incidents` spread over the last year."""
    from sqlalchemy import text

    from policy_server.db.bulk import insert_rows
    from policy_server.db.models import Event, Incident, Workstation
    from policy_server.people.service import create_person
    from policy_server.school.service import create_room_with_layout

    rng = random.Random(seed)
    now = datetime.now(UTC)
    year_ago = now - timedelta(days=365)
    with app.state.sessionmaker() as db:
        create_person(db, username="bench.admin", role="admin", password="bench-pass-9", actor="bench")
        rooms = [
            create_room_with_layout(db, actor="bench", name=f"Lab {i}", rows=3, columns=5)
            for i in range(1, (seats + 14) // 15 + 1)
        ]
        agents = []
        for n in range(seats):
            agent_id = str(uuid.uuid4())
            room = rooms[n // 15]
            db.add(
                Workstation(
                    id=agent_id,
                    hostname=f"pc-{n:02d}",
                    seat=f"lab{n // 15 + 1}-{n % 15 + 1:02d}",
                    room_id=room.id,
                    token_hash=uuid.uuid4().hex + uuid.uuid4().hex[:32],
                    last_seen_at=now - timedelta(seconds=rng.randint(0, 90)),
                    health=json.loads(json.dumps(HEALTH)),
                    agent_version="0.3.0",
                )
            )
            agents.append(agent_id)
        db.commit()
        if not events:
            return agents
        connection = db.connection()
        columns = (
            "id",
            "agent_id",
            "type",
            "occurred_at",
            "received_at",
            "os_user",
            "seat",
            "data",
            "clauses",
        )
        special = []  # the events the checks look for, over the year
        for agent in agents:
            for week in range(52):
                at = year_ago + timedelta(days=7 * week, hours=rng.randint(0, 23))
                special.append(
                    (
                        agent,
                        "av.scan.completed",
                        at,
                        {
                            "scan_id": f"w{week}",
                            "kind": "full",
                            "files": 120000,
                            "bytes": 10**9,
                            "threats": 0,
                            "duration_s": 900.0,
                        },
                    )
                )
            for month in range(12):
                at = year_ago + timedelta(days=30 * month + rng.randint(0, 29))
                special.append(
                    (agent, "integrity.baseline", at, {"digest": "d" * 64, "files": 9000, "seq": month})
                )
                special.append(
                    (
                        agent,
                        "integrity.changed",
                        at,
                        {
                            "path": f"/usr/bin/t{month}",
                            "change": "modified",
                            "package": "coreutils",
                            "new_sha256": "a" * 64,
                        },
                    )
                )
                special.append(
                    (
                        agent,
                        "usb.blocked",
                        at,
                        {
                            "device": {"vendor_id": "0781", "product_id": "5567", "serial": f"S{month}"},
                            "reason": "",
                        },
                    )
                )
                special.append((agent, "idle.lock_failed", at, {"error": "no helper", "reason": "idle"}))
        other_types = ("web.blocked", "web.usage", "usb.connected", "idle.locked", "av.health")
        rest = events - len(special)
        heartbeats = int(rest * 0.9)
        span = (now - year_ago).total_seconds()
        chunk: list[tuple] = []
        written = 0

        def flush() -> None:
            nonlocal chunk, written
            if chunk:
                insert_rows(connection, Event.__table__, columns, chunk)
                written += len(chunk)
                chunk = []

        for agent, type_, at, data in special:
            chunk.append((str(uuid.uuid4()), agent, type_, at, at, None, None, data, []))
        beat = {"agent_version": "0.3.0", "outbox_depth": 0}
        for i in range(rest):
            agent = agents[i % seats]
            at = year_ago + timedelta(seconds=span * (i / rest))
            if i < heartbeats:
                chunk.append((str(uuid.uuid4()), agent, "agent.heartbeat", at, at, None, None, beat, []))
            else:
                type_ = other_types[i % len(other_types)]
                chunk.append(
                    (str(uuid.uuid4()), agent, type_, at, at, "student", None, {"host": "x.example"}, [])
                )
            if len(chunk) >= 20_000:
                flush()
                db.commit()
                connection = db.connection()
        flush()
        db.commit()
        connection = db.connection()
        rules = (
            "web.blocked",
            "usb.blocked",
            "agent.collector_failed",
            "av.health",
            "integrity.package_update",
            "idle.lock_failed",
            "web.report",
        )
        rows = []
        for i in range(incidents):
            at = year_ago + timedelta(seconds=span * (i / incidents))
            status = "resolved" if i < incidents - 40 else "new"
            rule = rules[i % len(rules)]
            rows.append(
                {
                    "rule": rule,
                    "title": f"{rule} on pc",
                    "params": {},
                    "severity": "medium",
                    "clauses": ["000 §3.2"],
                    "dedup_key": f"{rule}:{i}",
                    "status": status,
                    "agent_id": agents[i % seats],
                    "seat": None,
                    "os_user": None,
                    "first_seen_at": at,
                    "last_seen_at": at,
                    "window_ends_at": at + timedelta(hours=1),
                    "event_count": 3,
                    "created_at": at,
                }
            )
        connection.execute(Incident.__table__.insert(), rows)
        db.commit()
        if db.get_bind().dialect.name == "postgresql":
            db.execute(text("ANALYZE"))
        else:
            db.execute(text("ANALYZE"))
        db.commit()
    return agents


def existing_agents(app) -> list[str]:
    from sqlalchemy import select

    from policy_server.db.models import Workstation

    with app.state.sessionmaker() as db:
        return list(db.scalars(select(Workstation.id).order_by(Workstation.hostname)))


def measure(app, agents: list[str], *, requests: int) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from tests.web.conftest import login

    results: dict[str, dict[str, float]] = {}
    client = TestClient(app, base_url="http://127.0.0.1")  # no lifespan: no periodic checks meanwhile
    assert login(client, "bench.admin", "bench-pass-9").status_code == 303
    for path in PAGES:
        url = f"/fleet/seats/{agents[0]}" if path == "SEAT" else path
        client.get(url)  # warm: the first answer records the fleet's changes once
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            answer = client.get(url)
            times.append(time.perf_counter() - started)
            assert answer.status_code == 200, (url, answer.status_code)
        times.sort()
        results["seat page" if path == "SEAT" else path] = {
            "p50_ms": 1000 * statistics.median(times),
            "p95_ms": 1000 * times[max(0, int(0.95 * len(times)) - 1)],
        }
    with app.state.sessionmaker() as db:
        started = time.perf_counter()
        db.execute(text("SELECT count(*) FROM events")).scalar()
        results["scan all events (reference)"] = {
            "p50_ms": 1000 * (time.perf_counter() - started),
            "p95_ms": float("nan"),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--incidents", type=int, default=20_000)
    parser.add_argument("--seats", type=int, default=30)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the SQLite databases in this folder and reuse them on the next run",
    )
    args = parser.parse_args()

    from policy_server.app import create_app
    from policy_server.settings import Settings
    from tests.support.postgres import PostgresCluster

    backends = args.backends.split(",")
    cluster = PostgresCluster() if "postgresql" in backends else None
    if cluster:
        cluster.start()
    report: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for backend in backends:
                for label, events, incidents in (("year", args.events, args.incidents), ("empty", 0, 0)):
                    keep = args.keep if args.keep and backend == "sqlite" else Path(tmp)
                    state = keep / f"{backend}-{label}"
                    reuse = backend == "sqlite" and (state / "kalkan.sqlite").is_file()
                    url = None if backend == "sqlite" else cluster.create_database()
                    app = create_app(
                        Settings(
                            state_dir=state,
                            db_url=url,
                            tls=False,
                            checks_interval_s=0,
                            isuo_checks_interval_s=0,
                        )
                    )
                    started = time.perf_counter()
                    if reuse:  # a database a previous run kept (--keep)
                        agents = existing_agents(app)
                    else:
                        agents = populate(app, events=events, incidents=incidents, seats=args.seats)
                    load_s = time.perf_counter() - started
                    print(f"{backend} {label}: loaded in {load_s:.0f} s", file=sys.stderr, flush=True)
                    report[f"{backend} {label}"] = measure(app, agents, requests=args.requests)
                    app.state.engine.dispose()
    finally:
        if cluster:
            cluster.stop()
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}, "
        f"{os.cpu_count()} cores; {args.events:,} events, {args.incidents:,} incidents, {args.seats} seats, "
        f"{args.requests} requests per page"
    )
    print("| backend | page | year p50 ms | year p95 ms | empty p95 ms | ratio p95 year/empty | ≤ 100 ms? |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for backend in backends:
        year, empty = report[f"{backend} year"], report[f"{backend} empty"]
        for page, figures in year.items():
            base = empty[page]
            if page.startswith("scan"):
                print(f"| {backend} | {page} | {figures['p50_ms']:.1f} | — | {base['p50_ms']:.1f} | — | — |")
                continue
            ratio = figures["p95_ms"] / base["p95_ms"] if base["p95_ms"] else float("nan")
            ok = "yes" if figures["p95_ms"] <= 100 else "**no**"
            print(
                f"| {backend} | {page} | {figures['p50_ms']:.1f} | {figures['p95_ms']:.1f} | "
                f"{base['p95_ms']:.1f} | {ratio:.2f} | {ok} |"
            )


if __name__ == "__main__":
    main()
