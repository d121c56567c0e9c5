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
import platform
import random
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

LOGINS = [f"user{i:03d}" for i in range(60)]
IPS = [f"10.35.1.{i}" for i in range(1, 41)]


def make_csv(rows: int) -> bytes:
    rnd = random.Random(7)
    start = datetime(2025, 9, 1, 2, 0, tzinfo=UTC)  # a school year
    out = io.StringIO()
    out.write("Пользователь;Дата и время;Действие;IP-адрес;Тип записи\n")
    for i in range(rows):
        at = start + timedelta(seconds=int(i * 365 * 86400 / rows) + rnd.randint(0, 50))
        out.write(
            f"{rnd.choice(LOGINS)};{at.astimezone().strftime('%Y-%m-%d %H:%M:%S')};view;"
            f"{rnd.choice(IPS)};student card\n"
        )
    return out.getvalue().encode()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _baseline(data: bytes, queue) -> None:
    before = _rss_mb()
    t0 = time.perf_counter()
    n = sum(1 for _ in csv.reader(io.StringIO(data.decode()), delimiter=";"))
    queue.put({"seconds": time.perf_counter() - t0, "peak_mb": _rss_mb() - before, "rows": n - 1})


def _prepare(state: Path):
    from policy_server.app import create_app
    from policy_server.settings import Settings

    return create_app(Settings(state_dir=state, tls=False))


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
            if i % 5:
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
        t0 = time.perf_counter()
        result = imports.import_file(db, source=source, data=data, file_name="bench.csv", actor="resp")
        db.commit()
        seconds = time.perf_counter() - t0
    queue.put(
        {
            "seconds": seconds,
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
        t0 = time.perf_counter()
        drafts = checks.check_period(
            db,
            since=datetime(2025, 8, 31, tzinfo=UTC),
            until=datetime(2026, 9, 1, tzinfo=UTC),
            now=datetime(2026, 9, 1, tzinfo=UTC),
        )
        db.rollback()  # the findings were already opened by the import: measure the full run, keep nothing
        seconds = time.perf_counter() - t0
    queue.put({"seconds": seconds, "peak_mb": _rss_mb() - before, "new_drafts": len(drafts)})


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
    args = parser.parse_args()
    data = make_csv(args.rows)
    with tempfile.TemporaryDirectory(prefix="isuo-bench-") as state:
        base = run_child(_baseline, data)
        imp = run_child(_import, state, data)
        again = run_child(_import_again, state, data)
        chk = run_child(_checks, state)
    report = {
        "machine": f"{platform.node()} {platform.machine()} {mp.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": args.rows,
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
            f.write(
                f"\n## {report['date']} — {report['machine']}\n\n"
                f"{args.rows} rows, {report['file_mb']:.1f} MB CSV, SQLite.\n\n"
                "| step | seconds | peak RSS growth MB | note |\n| --- | --- | --- | --- |\n"
                f"| baseline: csv.reader only | {base['seconds']:.2f} | {base['peak_mb']:.0f} | |\n"
                f"| import (parse, hash, dedup, seat, insert, checks) | {imp['seconds']:.2f} | {imp['peak_mb']:.0f} |"
                f" {imp['rows']} new, {imp['incidents']} incidents; {report['import_vs_parse']:.1f}× the bare parse |\n"
                f"| same file again | {again['seconds']:.2f} | {again['peak_mb']:.0f} | {again['rows']} new |\n"
                f"| cross-checks over the year | {chk['seconds']:.2f} | {chk['peak_mb']:.0f} |"
                f" {chk['new_drafts']} new drafts (all already reported) |\n"
            )


def _import_again(state: str, data: bytes, queue) -> None:
    app = _prepare(Path(state))
    from sqlalchemy import select

    from policy_server.isuo import imports
    from policy_server.isuo.models import IsuoSource

    with app.state.sessionmaker() as db:
        source = db.scalar(select(IsuoSource))
        before = _rss_mb()
        t0 = time.perf_counter()
        result = imports.import_file(db, source=source, data=data, file_name="bench.csv", actor="resp")
        db.commit()
    queue.put({"seconds": time.perf_counter() - t0, "peak_mb": _rss_mb() - before, "rows": result.rows_new})


if __name__ == "__main__":
    main()
