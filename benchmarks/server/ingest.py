"""Ingest benchmark: events/s through validate → store → rules, batches of 500.

Runs, side by side in one go, on SQLite and on a throwaway PostgreSQL cluster:
* `http`     — the real `kalkan-server run` (TLS), 2 client threads posting batches of 500;
* `pipeline` — `ingest_batch` called in-process (no HTTP/JSON), the server's own work;
* `baseline` — the same events stored the naive way (validate, then one ORM row per event with
  a duplicate check each, then the rules), measured in the same run on the same database.

The event mix is what a lab sends: 40 % web.blocked (rules merge them into incidents), 30 %
heartbeats, 20 % web.usage, 10 % web.report.

    .venv/bin/python benchmarks/server/ingest.py [--events 40000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from policy_server import protocol  # noqa: E402

BATCH = 500


def make_events(n: int, seats: int = 30) -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        seat = f"seat-{rng.randrange(seats)}"
        subject = protocol.Subject(os_user=f"st{rng.randrange(seats)}", seat=seat)
        kind = rng.random()
        if kind < 0.4:
            e = protocol.make_event(
                "web.blocked",
                {
                    "url": f"http://bad{i % 50}.example/",
                    "host": "bad.example",
                    "categories": ["adult"],
                    "group": "student",
                },
                subject=subject,
            )
        elif kind < 0.7:
            e = protocol.make_event(
                "agent.heartbeat",
                {"agent_version": "0.1.0", "policy_version": 1, "collectors": {"usb": {"state": "ok"}}},
            )
        elif kind < 0.9:
            e = protocol.make_event(
                "web.usage",
                {
                    "period_start": "2025-01-01T08:00:00Z",
                    "period_end": "2025-01-01T09:00:00Z",
                    "counts": {"edu.kg": 12, "wikipedia.org": 3},
                },
                subject=subject,
            )
        else:
            e = protocol.make_event("web.report", {"url": f"http://r{i % 20}.example/"}, subject=subject)
        out.append(e.model_dump(mode="json"))
    return out


def bench_http(db_url: str | None, state: Path, events: list[dict]) -> float:
    from tests.support.server import KalkanServerProcess

    with KalkanServerProcess(state, db_url=db_url) as server:
        tokens = [server.enroll(f"pc-{i}", room="lab-1")[1] for i in range(2)]
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        lanes = [batches[0::2], batches[1::2]]
        errors: list[str] = []

        def lane(token: str, mine: list[list[dict]]) -> None:
            with server.agent_client(token) as c:
                for b in mine:
                    r = c.post("/api/v1/events", json={"events": b})
                    if r.status_code != 200 or len(r.json()["accepted"]) != len(b):
                        errors.append(r.text[:200])

        threads = [threading.Thread(target=lane, args=(t, m)) for t, m in zip(tokens, lanes, strict=True)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise RuntimeError(f"ingest errors: {errors[:3]}\n{server.log_text()}")
    return len(events) / elapsed


def _setup(db_url: str):
    from policy_server.agents.service import create_enrollment_code, enroll
    from policy_server.db import migrate
    from policy_server.db.models import Workstation
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.school.service import ensure_room, ensure_school

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    with sm() as db:
        ensure_school(db, name="Bench", actor="bench")
        ensure_room(db, name="lab-1", actor="bench")
        code = create_enrollment_code(db, actor="bench", room="lab-1", uses=1)
        agent_id = enroll(db, protocol.EnrollRequest(code=code, hostname="pc")).agent_id
        db.commit()
    return engine, sm, lambda db: db.get(Workstation, agent_id)


def bench_pipeline(db_url: str, events: list[dict]) -> float:
    from policy_server.events.ingest import ingest_batch

    engine, sm, agent = _setup(db_url)
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        with sm() as db:
            result = ingest_batch(db, agent=agent(db), items=events[i : i + BATCH])
            db.commit()
            assert not result.rejected
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(events) / elapsed


def bench_baseline(db_url: str, events: list[dict]) -> float:
    """Naive: per event a duplicate SELECT and an ORM INSERT, rules per event."""
    from policy_server.db.models import Event
    from policy_server.events.ingest import _rule_input, validate_event
    from policy_server.incidents.engine import process_events

    engine, sm, agent = _setup(db_url)
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        with sm() as db:
            ws = agent(db)
            for n, item in enumerate(events[i : i + BATCH]):
                v = validate_event(item, n, ws.id, protocol.datetime.now(protocol.UTC))
                if db.get(Event, v.row["id"]) is None:
                    db.add(Event(**v.row))
                    db.flush()
                    process_events(db, [_rule_input(v, ws, "lab-1")])
            db.commit()
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--baseline-events", type=int, default=10_000)
    args = parser.parse_args()
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for backend in ("sqlite", "postgresql"):

                def url(name: str, backend=backend) -> str:
                    return (
                        f"sqlite:///{tmp / name}.sqlite" if backend == "sqlite" else cluster.create_database()
                    )

                http = bench_http(
                    None if backend == "sqlite" else url("h"),
                    tmp / f"state-{backend}",
                    make_events(args.events),
                )
                pipe = bench_pipeline(url("p"), make_events(args.events))
                base = bench_baseline(url("b"), make_events(args.baseline_events))
                rows.append((backend, http, pipe, base))
                print(
                    f"{backend}: http {http:,.0f}/s  pipeline {pipe:,.0f}/s  baseline {base:,.0f}/s",
                    flush=True,
                )
    finally:
        cluster.stop()
    print("\n| backend | HTTP (real server, TLS, 2 clients) | pipeline in-process | naive baseline "
          "| goal | HTTP / goal |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for backend, http, pipe, base in rows:
        goal = 10_000 if backend == "sqlite" else 20_000
        print(
            f"| {backend} | {http:,.0f}/s | {pipe:,.0f}/s | {base:,.0f}/s | {goal:,}/s | {http / goal:.2f} |"
        )


if __name__ == "__main__":
    main()
