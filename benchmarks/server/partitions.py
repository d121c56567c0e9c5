"""Events by month (revision 0402_events_by_month): ingest and retention, partitioned vs plain.

Side by side in one run, on one throwaway PostgreSQL cluster (tests/support/postgres.py),
two fresh databases with the same code:

* **partitioned** — every revision (`upgrade heads`): `events` LIST by type, RANGE by month,
  primary key (id, type, occurred_at), `INSERT … ON CONFLICT DO NOTHING`;
* **plain** (the baseline, today's table before 0402) — every revision but 0402: one
  table, primary key (id), `INSERT … ON CONFLICT DO NOTHING` (the same statement).

Rows:

* `ingest pipeline` — `ingest_batch` in-process, batches of 500, the lab's event mix of
  benchmarks/server/ingest.py (validate → store → rules → incidents): events/s;
* `store only` — `events.store.insert_new_events` alone (the statement that changed): events/s;
* `insert statement only` — the store's statement over psycopg, the two tables alternating
  statement by statement (`--sql-pairs`): the fairest figure on a busy machine;
* `retention` — `apply_retention` removing one old month of `web.usage` rows (`--old-rows`):
  DROP of the month's partition vs DELETE of its rows, seconds.

The two variants alternate inside each repeat; medians of `--repeats`; ratios partitioned /
plain.  The load average is printed (shared machine).

    .venv/bin/python benchmarks/server/partitions.py [--events 20000] [--repeats 3] [--old-rows 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import BATCH, cpu_model, make_events  # noqa: E402

from policy_server import protocol  # noqa: E402


def _setup(db_url: str):
    """ingest.py's set-up without its `migrate.upgrade` (which would partition the plain one)."""
    from policy_server.agents.service import create_enrollment_code, enroll
    from policy_server.db.models import Workstation
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.school.service import ensure_room, ensure_school

    engine = make_engine(db_url)
    sm = make_sessionmaker(engine)
    with sm() as db:
        ensure_school(db, name="Bench", actor="bench")
        ensure_room(db, name="lab-1", actor="bench")
        code = create_enrollment_code(db, actor="bench", room="lab-1", uses=1)
        agent_id = enroll(db, protocol.EnrollRequest(code=code, hostname="pc")).agent_id
        db.commit()
    return engine, sm, lambda db: db.get(Workstation, agent_id)


def make_db(cluster, *, partitioned: bool) -> str:
    from alembic import command

    from policy_server.db import migrate

    url = cluster.create_database()
    config = migrate.alembic_config(url)
    from alembic.script import ScriptDirectory

    for head in ScriptDirectory.from_config(config).get_heads():
        if partitioned or head != "0402_events_by_month":
            command.upgrade(config, head)
    from sqlalchemy import create_engine

    from policy_server.events.partitions import is_partitioned

    engine = create_engine(url)
    with engine.connect() as connection:
        assert is_partitioned(connection) == partitioned
    engine.dispose()
    return url


def bench_pipeline(url: str, events: list[dict]) -> float:
    from policy_server.events.ingest import ingest_batch

    engine, sm, agent = _setup(url)
    with sm() as db:  # warm-up: not timed
        ingest_batch(db, agent=agent(db), items=make_events(BATCH, seed=99))
        db.commit()
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        with sm() as db:
            result = ingest_batch(db, agent=agent(db), items=events[i:i + BATCH])
            db.commit()
            assert not result.rejected and len(result.accepted) == len(events[i:i + BATCH])
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(events) / elapsed


def bench_store(url: str, events: list[dict]) -> float:
    from policy_server.events.store import insert_new_events
    from policy_server.events.validation import validate_batch

    engine, sm, agent = _setup(url)
    batches = [validate_batch(events[i:i + BATCH]) for i in range(0, len(events), BATCH)]
    now = datetime.now(UTC)
    with sm() as db:
        agent_id = agent(db).id
        # warm-up (connection, prepared statement, each partition's relation cache): not timed
        warm = validate_batch(make_events(BATCH, seed=99))
        insert_new_events(db, agent_id=agent_id, received_at=now, events=warm)
        db.commit()
    start = time.perf_counter()
    for batch in batches:
        with sm() as db:
            stored = insert_new_events(db, agent_id=agent_id, received_at=now, events=batch)
            db.commit()
            assert len(stored) == len(batch)
    elapsed = time.perf_counter() - start
    # the same batches again: every one a duplicate (the exactly-once path)
    with sm() as db:
        assert not insert_new_events(db, agent_id=agent_id, received_at=now, events=batches[0])
    engine.dispose()
    return len(events) / elapsed


def bench_retention(url: str, old_rows: int) -> tuple[float, list[str]]:
    from sqlalchemy import text

    from policy_server.db.retention import apply_retention
    from policy_server.events import partitions

    engine, sm, agent = _setup(url)
    month = partitions.add_months(partitions.month_start(datetime.now(UTC)), -6)
    with sm() as db:
        if partitions.is_partitioned(db.connection()):
            partitions.create_month(db.connection(), "browsing", month)
        db.execute(text(
            "INSERT INTO events (id, agent_id, type, occurred_at, received_at, os_user, seat, data, clauses) "
            "SELECT 'old-' || g, :agent, 'web.usage', :start + (g || ' seconds')::interval, now(), 'st1', "
            "'seat-1', '{\"counts\": {\"edu.kg\": 3}}', '[\"001 §2.15\"]' FROM generate_series(1, :n) g"),
            {"agent": agent(db).id, "start": month + timedelta(days=1), "n": old_rows})
        db.commit()
        db.execute(text("ANALYZE events"))
        db.commit()
    start = time.perf_counter()
    with sm() as db:
        plan = apply_retention(db, actor="bench", days=90)
        db.commit()
    elapsed = time.perf_counter() - start
    assert plan.total == old_rows, plan.removable
    engine.dispose()
    return elapsed, plan.partitions_dropped


_SQL = ("INSERT INTO events (id, type, occurred_at, os_user, data, clauses, agent_id, seat, received_at) "
        "SELECT u.c0, u.c1, u.c2, u.c3, u.c4::jsonb, u.c5::jsonb, %(a)s, 's', now() "
        "FROM unnest(%(c0)s::varchar[], %(c1)s::varchar[], %(c2)s::timestamptz[], %(c3)s::varchar[], "
        "%(c4)s::text[], %(c5)s::text[]) AS u(c0, c1, c2, c3, c4, c5) ON CONFLICT DO NOTHING RETURNING id")


def bench_sql_pairs(cluster, pairs: int) -> dict[str, float]:
    """The store's statement alone over psycopg, the two tables alternating statement by
    statement (the fairest comparison on a busy machine): median ms per 500 rows."""
    import uuid

    import psycopg

    urls = {"partitioned": make_db(cluster, partitioned=True), "plain": make_db(cluster, partitioned=False)}
    connections = {k: psycopg.connect(u.replace("postgresql+psycopg", "postgresql")) for k, u in urls.items()}
    times: dict[str, list[float]] = {k: [] for k in urls}
    now = datetime.now(UTC)
    try:
        for i in range(pairs + 5):
            for variant in (("partitioned", "plain") if i % 2 == 0 else ("plain", "partitioned")):
                rows = {"a": "agent-1", "c0": [str(uuid.uuid4()) for _ in range(BATCH)],
                        "c1": ["web.blocked" if j % 2 else "agent.heartbeat" for j in range(BATCH)],
                        "c2": [now] * BATCH, "c3": ["st1"] * BATCH,
                        "c4": ['{"url": "http://x.example/"}'] * BATCH, "c5": ['["001 §2.15"]'] * BATCH}
                start = time.perf_counter()
                with connections[variant].cursor() as cursor:
                    cursor.execute(_SQL, rows)
                    assert len(cursor.fetchall()) == BATCH
                connections[variant].commit()
                if i >= 5:  # the first ones warm caches up
                    times[variant].append((time.perf_counter() - start) * 1000)
    finally:
        for connection in connections.values():
            connection.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-rows", type=int, default=100_000)
    parser.add_argument("--sql-pairs", type=int, default=200, help="statement pairs of the SQL-only row")
    parser.add_argument("--only-sql", action="store_true", help="only the SQL-only row")
    args = parser.parse_args()

    from policy_server.cli import _tune_gc
    from tests.support.postgres import PostgresCluster

    _tune_gc()
    events = make_events(args.events)
    cluster = PostgresCluster()
    cluster.start()
    results: dict[tuple[str, str], list[float]] = {}
    loads: list[float] = []
    try:
        sql = bench_sql_pairs(cluster, args.sql_pairs)
        loads.append(os.getloadavg()[0])
        print(f"SQL statement only, {args.sql_pairs} alternating pairs of {BATCH} rows: partitioned "
              f"{sql['partitioned']:.1f} ms, plain {sql['plain']:.1f} ms (load {loads[-1]:.1f})", flush=True)
        for variant, ms in sql.items():
            results[("insert statement only, alternating pairs (events/s)", variant)] = [BATCH / ms * 1000]
        for repeat in range(0 if args.only_sql else args.repeats):
            order = ("partitioned", "plain") if repeat % 2 == 0 else ("plain", "partitioned")
            for variant in order:
                partitioned = variant == "partitioned"
                for row, run in (("ingest pipeline (events/s)", lambda u: bench_pipeline(u, events)),
                                 ("store only (events/s)", lambda u: bench_store(u, events))):
                    value = run(make_db(cluster, partitioned=partitioned))
                    results.setdefault((row, variant), []).append(value)
                    load = os.getloadavg()[0]
                    print(f"repeat {repeat + 1} {variant:11} {row}: {value:,.0f} (load {load:.1f})",
                          flush=True)
                seconds, dropped = bench_retention(make_db(cluster, partitioned=partitioned), args.old_rows)
                row = f"retention of {args.old_rows:,} old rows (s)"
                results.setdefault((row, variant), []).append(seconds)
                print(f"repeat {repeat + 1} {variant:11} retention: {seconds:.3f} s, dropped {dropped}",
                      flush=True)
                loads.append(os.getloadavg()[0])
    finally:
        cluster.stop()
    print(f"\nMachine: nproc={os.cpu_count()}, CPU {cpu_model()!r}, Python {sys.version.split()[0]}, "
          f"date {date.today()}; load average median {statistics.median(loads):.1f}, max {max(loads):.1f}; "
          f"medians of {args.repeats} ({args.sql_pairs} pairs: statement row), {args.events:,} events, "
          "PostgreSQL test cluster (fsync off)\n")
    print("| measure | partitioned | plain (baseline) | partitioned / plain |")
    print("| --- | ---: | ---: | ---: |")
    for row in dict.fromkeys(r for r, _ in results):
        new = statistics.median(results[(row, "partitioned")])
        old = statistics.median(results[(row, "plain")])
        fmt = (lambda v: f"{v:,.0f}") if "events/s" in row else (lambda v: f"{v:.3f}")
        print(f"| {row} | {fmt(new)} | {fmt(old)} | {new / old:.2f}× |")


if __name__ == "__main__":
    main()
