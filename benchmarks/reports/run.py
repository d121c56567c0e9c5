"""Reports benchmark: the weekly summary over a school year of 30 seats, and the district page
over 100 schools × 52 weeks.  Goals (issue 15): ≤ 2 s HTML, ≤ 5 s PDF, ≤ 1 s district page.

    .venv/bin/python benchmarks/reports/run.py [--db postgresql+psycopg://…] [--repeats 3]

The school year (1 September 2026 – 31 May 2027, 39 weeks) is written straight into a fresh
database (SQLAlchemy core, as the ingest stores it): a heartbeat a minute from 08:00 to 16:00
on school days (2.8 M rows), daily antivirus health, a weekly full scan, 40 blocked pages a
day, a few USB refusals, idle locks, reports, integrity findings and the incidents they make.

Baseline, side by side in the same run: the same figures with the heartbeats read row by row
into Python (`naive_load`, the obvious first version) instead of reduced in SQL — what the
narrow query module's design saves.  The district baseline is the page asked for all 52 weeks
of trend instead of the default 8.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import insert, select  # noqa: E402

from policy_server.db import migrate  # noqa: E402
from policy_server.db.models import (  # noqa: E402
    AuditRecord,
    Event,
    Incident,
    PolicyVersion,
    Room,
    School,
    TimelineEntry,
    Workstation,
)
from policy_server.db.session import make_engine, make_sessionmaker  # noqa: E402
from policy_server.district import service as district  # noqa: E402
from policy_server.district.models import DistrictSchool, DistrictWeek  # noqa: E402
from policy_server.summaries import render  # noqa: E402
from policy_server.web import templating  # noqa: E402
from reports import data, figures, query  # noqa: E402

FIRST, LAST = date(2026, 8, 31), date(2027, 5, 30)  # Monday of 2026-W36 .. Sunday of 2027-W21
SEATS = 30
OK = {n: {"state": "ok"} for n in ("proxy", "usb", "idle", "antivirus", "integrity", "network")}


def utc(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - timedelta(hours=6)


def seed_school(sessions) -> None:
    rnd = random.Random(15)
    with sessions() as db:
        db.add(School(id=1, name="Bench School", district="Bench"))
        db.add(Room(id=1, school_id=1, name="Lab 1"))
        db.add(PolicyVersion(version=1, content_hash="x", bundle={}, created_at=utc(FIRST, 0)))
        db.flush()
        ids = [str(uuid.uuid4()) for _ in range(SEATS)]
        db.execute(
            insert(Workstation),
            [
                {
                    "id": a,
                    "hostname": f"pc-{i:02d}",
                    "seat": f"{i:02d}",
                    "room_id": 1,
                    "token_hash": f"{i:064d}",
                    "enrolled_at": utc(FIRST, 0) - timedelta(days=1),
                    "health": {},
                }
                for i, a in enumerate(ids)
            ],
        )
        db.commit()
        batch: list[dict] = []
        incidents: list[dict] = []

        def ev(agent, typ, at, payload):
            batch.append(
                {
                    "id": str(uuid.uuid4()),
                    "agent_id": agent,
                    "type": typ,
                    "occurred_at": at,
                    "received_at": at,
                    "data": payload,
                    "clauses": [],
                }
            )

        day = FIRST
        while day <= LAST:
            if day.weekday() < 5:
                for n, agent in enumerate(ids):
                    if rnd.random() < 0.03:
                        continue  # a seat switched off for the day
                    for minute in range(0, 8 * 60):
                        ev(
                            agent,
                            "agent.heartbeat",
                            utc(day, 8) + timedelta(minutes=minute),
                            {"agent_version": "0.1", "policy_version": 1, "collectors": OK},
                        )
                    ev(
                        agent,
                        "av.health",
                        utc(day, 8, 5),
                        {"clamd_reachable": True, "signature_age_days": 0.4},
                    )
                    if day.weekday() == 4 and rnd.random() < 0.93:
                        ev(
                            agent,
                            "av.scan.completed",
                            utc(day, 13),
                            {
                                "scan_id": f"{n}{day}",
                                "kind": "full",
                                "files": 9000,
                                "bytes": 1,
                                "threats": 0,
                                "duration_s": 1000.0,
                            },
                        )
                    for _ in range(rnd.randint(0, 3)):
                        ev(
                            agent,
                            "idle.locked",
                            utc(day, rnd.randint(8, 15)),
                            {"idle_s": 900, "timeout_s": 900},
                        )
                for k in range(40):
                    ev(
                        rnd.choice(ids),
                        "web.blocked",
                        utc(day, 9, k),
                        {"url": "", "categories": [rnd.choice(["games", "adult", "social", "video"])]},
                    )
                if rnd.random() < 0.3:
                    agent = rnd.choice(ids)
                    ev(agent, "usb.blocked", utc(day, 11), {"device": {"kinds": ["storage"]}})
                    incidents.append(
                        {"rule": "usb.blocked", "severity": "medium", "agent_id": agent, "at": utc(day, 11)}
                    )
                if rnd.random() < 0.2:
                    agent = rnd.choice(ids)
                    ev(agent, "web.report", utc(day, 12), {"url": "http://x.example/"})
                    incidents.append(
                        {"rule": "web.report", "severity": "medium", "agent_id": agent, "at": utc(day, 12)}
                    )
            if len(batch) > 50_000:
                db.execute(insert(Event), batch)
                db.commit()
                batch.clear()
            day += timedelta(days=1)
        if batch:
            db.execute(insert(Event), batch)
        for agent in ids:
            ev(agent, "integrity.baseline", utc(FIRST, 7), {"digest": "d", "files": 1})
        db.execute(insert(Event), batch[-SEATS:])
        for i, inc in enumerate(incidents, start=1):
            db.add(
                Incident(
                    id=i,
                    rule=inc["rule"],
                    title=inc["rule"],
                    severity=inc["severity"],
                    dedup_key=str(i),
                    status="resolved" if i % 3 else "new",
                    agent_id=inc["agent_id"],
                    first_seen_at=inc["at"],
                    last_seen_at=inc["at"],
                    window_ends_at=inc["at"],
                )
            )
            if i % 3:
                db.add(
                    TimelineEntry(
                        incident_id=i,
                        at=inc["at"] + timedelta(hours=5 + i % 20),
                        actor="admin",
                        action="resolved",
                    )
                )
        week = FIRST
        while week <= LAST:
            db.add(AuditRecord(at=utc(week + timedelta(days=2), 20), actor="cli", action="backup.created"))
            week += timedelta(days=7)
        db.commit()


def naive_load(db, period: data.Period) -> data.SchoolWeek:
    """Baseline: the week with every heartbeat row read into Python."""
    from zoneinfo import ZoneInfo

    fast = query.load_week(db, period)
    zone = ZoneInfo(period.tz)
    days: dict[str, set] = {}
    last: dict[str, data.Heartbeat] = {}
    for agent, at, payload in db.execute(
        select(Event.agent_id, Event.occurred_at, Event.data).where(
            Event.type == "agent.heartbeat", Event.occurred_at >= period.start, Event.occurred_at < period.end
        )
    ):
        days.setdefault(agent, set()).add(at.astimezone(zone).date())
        if agent not in last or at > last[agent].at:
            last[agent] = data.Heartbeat(
                at,
                payload.get("policy_version"),
                {k: v.get("state") for k, v in payload["collectors"].items()},
            )
    from dataclasses import replace

    return replace(fast, heartbeat_days={a: frozenset(d) for a, d in days.items()}, last_heartbeat=last)


def week_html(db, loader) -> tuple[float, dict]:
    start = time.perf_counter()
    tz = "Asia/Bishkek"
    wanted = [(2027, 20 - i) for i in range(5)][::-1]
    loaded = [loader(db, query.week_period(y, w, tz)) for y, w in wanted]
    summary = figures.summarise(loaded[-1], loaded[:-1]).as_dict()
    html = templating.render("ky", "summaries/document.html", **render.context(summary, "ky"))
    assert "Bench School" in html
    return time.perf_counter() - start, summary


def seed_district(sessions, schools: int = 100, weeks: int = 52) -> None:
    rnd = random.Random(7)
    with sessions() as db:
        ids = [str(uuid.uuid4()) for _ in range(schools)]
        db.execute(
            insert(DistrictSchool),
            [
                {"id": s, "name": f"School {i:03d}", "public_key": "k", "created_at": datetime.now(UTC)}
                for i, s in enumerate(ids)
            ],
        )
        rows = []
        monday = date(2026, 1, 5)
        for w in range(weeks):
            y, n, _ = (monday + timedelta(days=7 * w)).isocalendar()
            for s in ids:
                agg = {
                    "score": rnd.randint(50, 100),
                    "state": "attention",
                    "seats": 30,
                    "seats_reported": 29,
                    "controls": {
                        k: {"passed": rnd.randint(20, 30), "total": 30} for k in district.CONTROL_KEYS
                    },
                    "incidents": {"high": {"opened": rnd.randint(0, 20)}},
                    "blocked": {"games": rnd.randint(0, 300)},
                    "queue": {"received": rnd.randint(0, 12)},
                    "storage_attempts": rnd.randint(0, 15),
                    "isuo": {},
                    "lessons": {},
                }
                rows.append(
                    {
                        "school_id": s,
                        "period": f"{y}-W{n:02d}",
                        "aggregates": agg,
                        "signature": "x",
                        "received_at": datetime.now(UTC),
                    }
                )
        db.execute(insert(DistrictWeek), rows)
        db.commit()


def district_page(db, weeks: int) -> float:
    start = time.perf_counter()
    pic = district.picture(db, weeks=weeks)
    html = templating.render(
        "ky",
        "district/district.html",
        pic=pic,
        trend_chart="",
        person=None,
        perms=None,
        control_keys=district.CONTROL_KEYS,
        control_names=render.CONTROL_NAMES,
        count_columns=district.COUNT_COLUMNS,
        min_schools=district.MIN_SCHOOLS,
        percent=render.percent,
        state_names=render.STATE_NAMES,
        role_name="",
        csrf_token="",
        lang_links={c: "" for c in ("ky", "ru", "en")},
        notice=None,
        error=None,
        section="district",
        page_title="District",
    )
    assert "School 099" in html
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--db",
        help="database URL (default: a fresh SQLite file); 'postgresql': a "
        "throwaway cluster (tests/support/postgres.py)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reuse", help="an SQLite file seeded by an earlier run (skips the 15-minute seeding)"
    )
    parser.add_argument(
        "--district-only", action="store_true", help="only the district page (e.g. on PostgreSQL)"
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="kalkan-bench-reports-")
    url = f"sqlite:///{args.reuse}" if args.reuse else (args.db or f"sqlite:///{tmp}/school.sqlite")
    if url == "postgresql":
        import atexit

        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        atexit.register(cluster.stop)
        url = cluster.create_database()
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    t0 = time.perf_counter()
    if args.district_only:
        seed_district(sessions)
        with sessions() as db:
            times = [district_page(db, 8) for _ in range(args.repeats)]
            base = [district_page(db, 52) for _ in range(args.repeats)]
        print(
            f"district page, 100 schools × 52 weeks, {url.split(':')[0]}: {statistics.median(times):.3f} s "
            f"(52-week trend: {statistics.median(base):.3f} s), goal 1 s, load1={os.getloadavg()[0]:.1f}"
        )
        return 0
    if not args.reuse:
        seed_school(sessions)
        seed_district(sessions)
    with sessions() as db:
        events = db.query(Event).count()
    print(
        f"{'reused' if args.reuse else 'seeded'} {events:,} events and 100 schools × 52 weeks "
        f"in {time.perf_counter() - t0:.0f} s "
        f"({url.split(':')[0]})"
    )

    html_new, html_base, pdf_new, dist_new, dist_base, kept = [], [], [], [], [], []
    with sessions() as db:
        for _ in range(args.repeats):
            t, summary = week_html(db, query.load_week)
            html_new.append(t)
            t, _s = week_html(db, naive_load)
            html_base.append(t)
            start = time.perf_counter()
            week_html(db, query.load_week)
            pdf = render.pdf(summary, "ky")
            pdf_new.append(time.perf_counter() - start)
            assert pdf.startswith(b"%PDF")
            start = time.perf_counter()  # a kept week: the page only renders the stored figures
            html = templating.render("ky", "summaries/document.html", **render.context(summary, "ky"))
            kept.append(time.perf_counter() - start)
            assert "Bench School" in html
            dist_new.append(district_page(db, 8))
            dist_base.append(district_page(db, 52))
    load = os.getloadavg()[0]
    med = statistics.median
    print(
        f"machine: {platform.node()} nproc={os.cpu_count()} python {platform.python_version()} "
        f"load1={load:.1f} date={date.today()}"
    )
    print("| measure | new (median s) | baseline (median s) | new / baseline | goal | new / goal |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| weekly summary HTML, 30 seats, school year | {med(html_new):.2f} | {med(html_base):.2f} "
        f"| {med(html_new) / med(html_base):.2f} | 2 s | {med(html_new) / 2:.2f} |"
    )
    print(
        f"| kept week's HTML (render of the stored figures) | {med(kept):.3f} | — | — "
        f"| 2 s | {med(kept) / 2:.3f} |"
    )
    print(
        f"| weekly summary PDF (figures + WeasyPrint) | {med(pdf_new):.2f} | — | — "
        f"| 5 s | {med(pdf_new) / 5:.2f} |"
    )
    print(
        f"| district page, 100 schools × 52 weeks (8-week trend) | {med(dist_new):.2f} "
        f"| {med(dist_base):.2f} "
        f"(52-week trend) | {med(dist_new) / med(dist_base):.2f} | 1 s | {med(dist_new) / 1:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
