"""ISUO benchmark: import of 100,000 access rows (time, peak memory) and the cross-checks over
a year of records, on a fresh SQLite database (the embedded default).  Goal: ≤ 10 s and
≤ 200 MB each on this machine.

    .venv/bin/python benchmarks/isuo/run.py [--rows 100000] [--out benchmarks/isuo/results.md]

Baseline in the same run: reading and parsing the same CSV with the standard `csv` module
only (no checks, no database), so the import's cost is shown as a ratio to the bare parse.
Peak memory is the process's peak RSS growth (ru_maxrss) measured in a child process per step.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

LOGINS = [f"user{i:03d}" for i in range(60)]
IPS = [f"10.35.1.{i}" for i in range(1, 41)]


def make_csv(rows: int, worst: bool = False) -> bytes:
    """A school year of ISUO records.  Realistic: school days (Mon-Sat, 08:00-17:30 local),
    registered logins; ~1 % in the evening, ~0.5 % by unknown logins (a few hundred findings).
    `worst`: times spread over all 24 h and 7 days, 1 in 6 logins unknown (tens of thousands
    of findings: the incident engine's cost dominates)."""
    rnd = random.Random(7)
    start = date(2025, 9, 1)
    days = [start + timedelta(days=i) for i in range(365) if (start + timedelta(days=i)).weekday() < 6]
    out = io.StringIO()
    out.write("Пользователь;Дата и время;Действие;IP-адрес;Тип записи\n")
    for i in range(rows):
        if worst:
            at = datetime.combine(start, datetime.min.time()) + timedelta(seconds=int(i * 365 * 86400 / rows))
            login = rnd.choice(LOGINS)
        else:
            day = days[i * len(days) // rows]
            evening = rnd.random() < 0.01
            minute = rnd.randint(19 * 60, 23 * 60) if evening else rnd.randint(8 * 60, 17 * 60 + 30)
            at = datetime.combine(day, datetime.min.time()) + timedelta(
                minutes=minute, seconds=rnd.randint(0, 59)
            )
            login = LOGINS[50 + rnd.randrange(10)] if rnd.random() < 0.005 else LOGINS[rnd.randrange(50)]
        out.write(f"{login};{at:%Y-%m-%d %H:%M:%S};view;{rnd.choice(IPS)};student card\n")
    return out.getvalue().encode()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _baseline(data: bytes, queue) -> None:
    before = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(1 for _ in csv.reader(io.StringIO(data.decode()), delimiter=";"))
    queue.put(
        {
            "seconds": time.perf_counter() - t0,
            "cpu": time.process_time() - c0,
            "peak_mb": _rss_mb() - before,
            "rows": n - 1,
        }
    )


def _prepare(state: Path):
    from policy_server.app import create_app
    from policy_server.settings import Settings

    return create_app(
        Settings(state_dir=state, tls=False, db_url=os.environ.get("ISUO_BENCH_DB_URL") or None)
    )


def _import(state: str, data: bytes, queue) -> None:
    app = _prepare(Path(state))
    from sqlalchemy import select

    from policy_server.db.models import Person
    from policy_server.isuo import imports, service
    from policy_server.people.service import create_person
    from policy_server.scope import viewer_for

    with app.state.sessionmaker() as db:
        create_person(db, username="resp", role="admin", password="bench-pass-1", actor="bench")
        viewer = viewer_for(db, db.scalar(select(Person).where(Person.username == "resp")))
        for i, login in enumerate(LOGINS[:50]):  # 10 logins stay unknown
            user = service.save_user(
                db,
                viewer=viewer,
                full_name=f"Person {i}",
                position="teacher",
                isuo_role="teacher",
                logins=login,
            )
            if i % 25:  # two registered people without a signed obligation
                service.record_obligation(
                    db,
                    viewer=viewer,
                    user_id=user.id,
                    signed_on="2025-08-30",
                    instructed_by="Director",
                    scan=None,
                    scan_name="",
                    file_number=f"LD-{i}",
                    state_dir=Path(state),
                )
        for ip in IPS:
            service.set_address(db, viewer=viewer, ip=ip, seat=ip.rsplit(".", 1)[1])
        source = imports.save_source(
            db,
            name="bench",
            actor="resp",
            mapping={
                "login": "Пользователь",
                "time": "Дата и время",
                "action": "Действие",
                "ip": "IP-адрес",
                "record_type": "Тип записи",
            },
        )
        db.commit()
        before = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        result = imports.import_file(db, source=source, data=data, file_name="bench.csv", actor="resp")
        db.commit()
        seconds = time.perf_counter() - t0
    queue.put(
        {
            "seconds": seconds,
            "cpu": time.process_time() - c0,
            "peak_mb": _rss_mb() - before,
            "rows": result.rows_new,
            "incidents": result.incidents,
        }
    )


def _checks(state: str, queue) -> None:
    app = _prepare(Path(state))
    from policy_server.isuo import checks

    with app.state.sessionmaker() as db:
        before = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        drafts = checks.check_period(
            db,
            since=datetime(2025, 8, 31, tzinfo=UTC),
            until=datetime(2026, 9, 1, tzinfo=UTC),
            now=datetime(2026, 9, 1, tzinfo=UTC),
        )
        db.rollback()  # the findings were already opened by the import: measure the full run, keep nothing
        seconds = time.perf_counter() - t0
    queue.put(
        {
            "seconds": seconds,
            "cpu": time.process_time() - c0,
            "peak_mb": _rss_mb() - before,
            "new_drafts": len(drafts),
        }
    )


def run_child(target, *args) -> dict:
    queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worst", action="store_true", help="pathological data (see make_csv)")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    cluster = None
    if args.backend == "postgresql":  # a throwaway cluster of its own (tests/support/postgres.py)
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        os.environ["ISUO_BENCH_DB_URL"] = cluster.create_database()
    try:
        run(args)
    finally:
        if cluster is not None:
            cluster.stop()


def run(args) -> None:
    data = make_csv(args.rows, worst=args.worst)
    with tempfile.TemporaryDirectory(prefix="isuo-bench-") as state:
        base = run_child(_baseline, data)
        imp = run_child(_import, state, data)
        again = run_child(_import_again, state, data)
        chk = run_child(_checks, state)
    report = {
        "machine": f"{platform.node()} {platform.machine()} {mp.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg(),
        "rows": args.rows,
        "backend": args.backend,
        "file_mb": len(data) / 1e6,
        "baseline_parse": base,
        "import": imp,
        "import_again": again,
        "checks_year": chk,
        "import_vs_parse": imp["seconds"] / base["seconds"],
    }
    print(json.dumps(report, indent=1))
    if args.out:
        with args.out.open("a") as f:
            f.write(markdown(report, worst=args.worst))


def markdown(report: dict, *, worst: bool) -> str:
    def row(name: str, step: dict, note: str) -> str:
        return f"| {name} | {step['seconds']:.2f} | {step['cpu']:.2f} | {step['peak_mb']:.0f} | {note} |\n"

    imp, again, chk = report["import"], report["import_again"], report["checks_year"]
    return (
        f"\n## {report['date']} — {report['machine']}\n\n"
        f"{report['rows']} rows, {report['file_mb']:.1f} MB CSV, {report['backend']}, "
        f"{'worst-case' if worst else 'realistic'} data (see make_csv); load average at the end "
        f"{report['load_average'][0]:.1f} on {mp.cpu_count()} cores (other sessions running: wall "
        "times are inflated, CPU times less so).\n\n"
        "| step | wall s | CPU s | peak RSS growth MB | note |\n| --- | --- | --- | --- | --- |\n"
        + row("baseline: csv.reader only", report["baseline_parse"], "")
        + row(
            "import (parse, hash, dedup, seat, insert, checks)",
            imp,
            f"{imp['rows']} new, {imp['incidents']} incidents; "
            f"{report['import_vs_parse']:.0f}x the bare parse",
        )
        + row("same file again", again, f"{again['rows']} new")
        + row("cross-checks over the year", chk, f"{chk['new_drafts']} new drafts (all already reported)")
    )


def _import_again(state: str, data: bytes, queue) -> None:
    app = _prepare(Path(state))
    from sqlalchemy import select

    from policy_server.isuo import imports
    from policy_server.isuo.models import IsuoSource

    with app.state.sessionmaker() as db:
        source = db.scalar(select(IsuoSource))
        before = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        result = imports.import_file(db, source=source, data=data, file_name="bench.csv", actor="resp")
        db.commit()
    queue.put(
        {
            "seconds": time.perf_counter() - t0,
            "cpu": time.process_time() - c0,
            "peak_mb": _rss_mb() - before,
            "rows": result.rows_new,
        }
    )


if __name__ == "__main__":
    main()
