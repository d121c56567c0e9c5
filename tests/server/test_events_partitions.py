"""Events partitioned by month on PostgreSQL (revision 0402_events_by_month, events/partitions.py).

A real PostgreSQL (tests/support/postgres.py) and the real app: rows land in their month,
a retry is refused as a duplicate whatever month it comes back in, retention drops a whole
browsing month (keeping what an open incident holds), the months ahead are made by the
periodic job, and the revision converts a populated table without losing a row."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from policy_server import protocol
from policy_server.app import create_app
from policy_server.db import migrate
from policy_server.db.models import Event, Incident
from policy_server.db.retention import apply_retention
from policy_server.events import partitions
from policy_server.settings import Settings
from tests.server.conftest import Api

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC)
THIS_MONTH = partitions.month_start(NOW)


@pytest.fixture
def pg_api(postgres_cluster, tmp_path: Path) -> Iterator[Api]:
    url = postgres_cluster.create_database()
    app = create_app(Settings(state_dir=tmp_path / "state", db_url=url, tls=False, checks_first_delay_s=3600))
    with TestClient(app) as client:
        yield Api(client=client, app=app)


def _where(db, ids) -> dict[str, str]:
    """event id → the partition its row is in."""
    rows = db.execute(
        text("SELECT id, tableoid::regclass::text FROM events WHERE id = ANY(:ids)"),
        {"ids": [str(i) for i in ids]},
    ).all()
    return dict(rows)


def test_rows_land_in_their_month_and_retries_are_refused_in_any_month(pg_api):
    _, auth = pg_api.enroll()
    past = partitions.add_months(THIS_MONTH, -4)
    with pg_api.db() as db:
        assert partitions.is_partitioned(db.connection())
        partitions.create_month(db.connection(), "other", past)
        db.commit()
    report_now = protocol.make_event("web.report", {"url": "http://r.example/"})
    report_past = protocol.make_event(
        "web.report", {"url": "http://r.example/"}, occurred_at=past + timedelta(days=3)
    )
    blocked_now = protocol.make_event("web.blocked", {"url": "http://b.example/", "categories": ["adult"]})
    skewed = protocol.make_event(
        "web.report", {"url": "http://r.example/"}, occurred_at=datetime(2999, 5, 1, tzinfo=UTC)
    )  # no month made: default
    result = pg_api.post(auth, report_now, report_past, blocked_now, skewed)
    assert len(result["accepted"]) == 4
    with pg_api.db() as db:
        assert _where(db, [report_now.id, report_past.id, blocked_now.id, skewed.id]) == {
            str(report_now.id): partitions.partition_name("other", THIS_MONTH),
            str(report_past.id): partitions.partition_name("other", past),
            str(blocked_now.id): partitions.partition_name("browsing", THIS_MONTH),
            str(skewed.id): "events_other_default",
        }
    # The same envelopes again, months later for all the server knows: each one refused once.
    fresh = protocol.make_event("web.report", {"url": "http://r.example/"})
    again = pg_api.post(auth, report_past, blocked_now, report_now, skewed, fresh)
    assert sorted(again["duplicates"]) == sorted(
        str(e.id) for e in (report_past, blocked_now, report_now, skewed)
    )
    assert again["accepted"] == [str(fresh.id)]
    with pg_api.db() as db:
        assert db.scalar(text("SELECT count(*) FROM events WHERE type = 'web.report'")) == 4
        # making the skewed month later moves its waiting row out of the default partition
        partitions.create_month(db.connection(), "other", datetime(2999, 5, 1, tzinfo=UTC))
        db.commit()
        assert _where(db, [skewed.id]) == {str(skewed.id): "events_other_y2999m05"}
    assert pg_api.post(auth, skewed)["duplicates"] == [str(skewed.id)]


def test_the_periodic_job_makes_months_ahead(pg_api):
    later = NOW + timedelta(days=200)
    with pg_api.db() as db:
        made = partitions.partitions_job(db, later)
        last = partitions.add_months(partitions.month_start(later), partitions.AHEAD_MONTHS)
        assert partitions.partition_name("browsing", last) in made
        assert partitions.partitions_job(db, later) == []  # nothing twice
        names = {p.name for p in partitions.month_partitions(db.connection())}
    for n in range(partitions.AHEAD_MONTHS + 1):
        month = partitions.add_months(partitions.month_start(later), n)
        assert {partitions.partition_name(b, month) for b in partitions.BRANCHES} <= names


def test_retention_drops_whole_browsing_months_and_keeps_what_open_incidents_hold(pg_api):
    _, auth = pg_api.enroll()
    old = partitions.add_months(THIS_MONTH, -6)
    with pg_api.db() as db:
        for branch in partitions.BRANCHES:
            partitions.create_month(db.connection(), branch, old)
        db.commit()
    subject = protocol.Subject(os_user="st1", seat="seat-1")
    usage = [
        protocol.make_event(
            "web.usage",
            {
                "period_start": (old + timedelta(days=2, hours=i)).isoformat(),
                "period_end": (old + timedelta(days=2, hours=i + 1)).isoformat(),
                "counts": {"edu.kg": 2},
            },
            occurred_at=old + timedelta(days=2, hours=i),
        )
        for i in range(20)
    ]
    held = [
        protocol.make_event(
            "web.blocked",
            {"url": "http://bad.example/", "categories": ["adult"]},
            subject=subject,
            occurred_at=old + timedelta(days=3, seconds=i),
        )
        for i in range(6)
    ]
    security = protocol.make_event(
        "web.report", {"url": "http://r.example/"}, occurred_at=old + timedelta(days=4)
    )
    recent = protocol.make_event(
        "web.usage", {"period_start": NOW.isoformat(), "period_end": NOW.isoformat(), "counts": {"edu.kg": 1}}
    )
    pg_api.post(auth, *usage, *held, security, recent)
    with pg_api.db() as db:
        incident = db.scalar(select(Incident).where(Incident.rule == "web.blocked"))
        assert incident is not None and incident.status != "resolved"
        plan = apply_retention(db, actor="test", days=90)
        db.commit()
        assert plan.partitions_dropped == [partitions.partition_name("browsing", old)]
        assert plan.removable == {"web.usage": 20}
        assert (
            db.scalar(text("SELECT to_regclass(:n)"), {"n": partitions.partition_name("browsing", old)})
            is None
        )
        left = _where(db, [e.id for e in (*usage, *held, security, recent)])
        # the open incident's events moved to the browsing default partition, not lost
        assert {left[str(e.id)] for e in held} == {"events_browsing_default"}
        assert not any(str(e.id) in left for e in usage)
        # a student's report: held by its open incident (the month of events_other is never dropped)
        assert left[str(security.id)] == partitions.partition_name("other", old)
        assert left[str(recent.id)] == partitions.partition_name("browsing", THIS_MONTH)
        audit = db.execute(text("SELECT detail FROM audit_log WHERE action = 'retention.applied'")).scalar()
        assert audit["partitions_dropped"] == plan.partitions_dropped
    # a retry of a removed event is stored again only if the agent still has it: same as before
    assert pg_api.post(auth, held[0])["duplicates"] == [str(held[0].id)]


def test_retention_deletes_the_other_records_of_internet_use_and_drops_only_browsing_months(pg_api):
    """`web.alert`, `web.unblock_request`, `web.report` and `net.bypass` live in `events_other`
    beside the security events: retention DELETEs them row by row and never drops an
    `events_other` month (the heartbeat and the USB event of that month stay), while the
    browsing month of the same time is dropped whole."""
    from policy_server.incidents.service import resolve
    from policy_server.scope import Viewer

    _, auth = pg_api.enroll()
    old = partitions.add_months(THIS_MONTH, -5)
    with pg_api.db() as db:
        for branch in partitions.BRANCHES:
            partitions.create_month(db.connection(), branch, old)
        db.commit()
    st1, st2 = protocol.Subject(os_user="st1", seat="seat-1"), protocol.Subject(os_user="st2", seat="seat-1")
    at = old + timedelta(days=5)
    usage = protocol.make_event("web.usage", {"period_start": at.isoformat(), "period_end": at.isoformat(),
                                              "counts": {"edu.kg": 2}}, occurred_at=at)
    alert = protocol.make_event("web.alert", {"query": "how to hurt", "score": 90, "lists": ["self-harm"]},
                                subject=st1, occurred_at=at)
    unblock = protocol.make_event("web.unblock_request", {"url": "http://games.example/", "comment": "pls"},
                                  subject=st1, occurred_at=at)
    held = protocol.make_event("net.bypass", {"kind": "tor", "dst_ip": "203.0.113.9"}, subject=st2,
                               occurred_at=at)
    heartbeat = protocol.make_event("agent.heartbeat", {"agent_version": "1.0"}, occurred_at=at)
    usb = protocol.make_event("usb.blocked", {"device": {"vendor_id": "0781", "product_id": "5567"}},
                              occurred_at=at)
    recent = protocol.make_event("web.alert", {"query": "essay", "score": 60}, subject=st1)
    pg_api.post(auth, usage, alert, unblock, held, heartbeat, usb, recent)
    with pg_api.db() as db:
        held_incident = db.scalar(select(Incident.id).where(Incident.rule == "net.bypass"))
        for incident in db.scalars(select(Incident).where(Incident.id != held_incident)):
            resolve(db, incident_id=incident.id, viewer=Viewer.system(), reason="done")
        db.commit()
        before = _where(db, [alert.id, heartbeat.id])
        assert set(before.values()) == {partitions.partition_name("other", old)}
        plan = apply_retention(db, actor="test", days=90)
        db.commit()
        assert plan.partitions_dropped == [partitions.partition_name("browsing", old)]
        assert plan.removable == {"web.usage": 1, "web.alert": 1, "web.unblock_request": 1}
        assert plan.kept_for_open_incidents == 1
        other_old = partitions.partition_name("other", old)
        assert db.scalar(text("SELECT to_regclass(:n)"), {"n": other_old}) is not None
        left = _where(db, [e.id for e in (usage, alert, unblock, held, heartbeat, usb, recent)])
        assert set(left) == {str(e.id) for e in (held, heartbeat, usb, recent)}
        assert left[str(held.id)] == left[str(heartbeat.id)] == left[str(usb.id)] == other_old
        assert left[str(recent.id)] == partitions.partition_name("other", THIS_MONTH)


def _heads_but(config, skip: str) -> list[str]:
    return [h for h in ScriptDirectory.from_config(config).get_heads() if h != skip]


def _digest(connection) -> tuple[int, str]:
    rows = connection.execute(
        text(
            "SELECT id, agent_id, type, occurred_at, received_at, os_user, seat, data::text, clauses::text "
            "FROM events ORDER BY id"
        )
    ).all()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def test_the_revision_converts_a_populated_table_without_loss(postgres_cluster):
    url = postgres_cluster.create_database()
    config = migrate.alembic_config(url)
    for head in _heads_but(config, "0402_events_by_month"):
        command.upgrade(config, head)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            assert not partitions.is_partitioned(connection)
            connection.execute(
                text(
                    "INSERT INTO events (id, agent_id, type, occurred_at, received_at, os_user, seat, data, "
                    "clauses) "
                    "SELECT 'e-' || g, 'agent-' || (g % 7), "
                    "CASE WHEN g % 3 = 0 THEN 'web.usage' WHEN g % 3 = 1 THEN 'web.blocked' "
                    "ELSE 'agent.heartbeat' END, "
                    "now() - (g || ' hours')::interval * 3, now(), 'u' || (g % 5), 'seat-' || (g % 30), "
                    "jsonb_build_object('n', g), '[\"001 §2.15\"]'::jsonb FROM generate_series(1, 6000) g"
                )
            )
            connection.execute(
                text(  # absurd and far-future clocks
                    "INSERT INTO events VALUES "
                    "('e-old', 'agent-1', 'web.report', '1971-02-03Z', now(), NULL, NULL, '{}', '[]'), "
                    "('e-future', 'agent-1', 'web.usage', '2999-01-01Z', now(), NULL, NULL, '{}', '[]')"
                )
            )
            before = _digest(connection)
        command.upgrade(config, "heads")
        with engine.begin() as connection:
            assert partitions.is_partitioned(connection)
            assert _digest(connection) == before
            misplaced = connection.execute(
                text(
                    "SELECT count(*) FROM events WHERE tableoid::regclass::text <> "
                    "'events_' || CASE WHEN type IN ('web.usage', 'web.blocked') THEN 'browsing' "
                    "ELSE 'other' END "
                    "|| to_char(occurred_at AT TIME ZONE 'UTC', '\"_y\"YYYY\"m\"MM')"
                )
            ).scalar()
            assert misplaced == 2  # only the two absurd times, in the default partitions
            assert dict(
                connection.execute(
                    text("SELECT id, tableoid::regclass::text FROM events WHERE id IN ('e-old', 'e-future')")
                ).all()
            ) == {"e-old": "events_other_default", "e-future": "events_browsing_default"}
            indexes = set(
                connection.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
                ).scalars()
            )
            assert indexes == {"events_pkey", "ix_events_agent_time", "ix_events_type_time"}
            plan = (
                connection.execute(
                    text(
                        "EXPLAIN SELECT * FROM events WHERE type = 'web.usage' "
                        "AND occurred_at >= now() - interval '1 day'"
                    )
                )
                .scalars()
                .all()
            )
            assert not any("events_other" in line for line in plan)  # pruned to the browsing months
            for month in range(partitions.AHEAD_MONTHS + 1):
                name = partitions.partition_name("browsing", partitions.add_months(THIS_MONTH, month))
                assert connection.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None
        # the store's exactly-once insert on the converted table
        from policy_server.db.bulk import ANY_CONFLICT, insert_rows

        with engine.begin() as connection:
            row = connection.execute(
                text("SELECT id, type, occurred_at, os_user FROM events WHERE id = 'e-3'")
            ).one()
            got = insert_rows(
                connection,
                Event.__table__,
                ("id", "type", "occurred_at", "os_user", "data", "clauses"),
                [(row.id, row.type, row.occurred_at, row.os_user, {}, [])],
                constants={"agent_id": "agent-3", "seat": None, "received_at": NOW},
                on_conflict_do_nothing=ANY_CONFLICT,
                returning=("id",),
            )
            assert got == []
        command.downgrade(config, "0402_events_by_month-1")
        with engine.begin() as connection:
            assert not partitions.is_partitioned(connection)
            assert _digest(connection) == before
    finally:
        engine.dispose()
