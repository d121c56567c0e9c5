"""The ingest tables' schema (migration 0003) and the references the application keeps true.

On PostgreSQL, `events` and `incident_events` have no foreign-key triggers (they cost more
than half of a link row's insert); these tests hold the application to what the constraints
used to check, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, inspect, select, text

from policy_server import protocol
from policy_server.db import migrate
from policy_server.db.models import Event, Incident, IncidentEvent
from policy_server.db.retention import apply_retention
from policy_server.events.validation import validate_batch
from policy_server.incidents.service import resolve
from policy_server.scope import Viewer

_INGEST_FKS = {("events", "agent_id"), ("incident_events", "event_id"), ("incident_events", "incident_id")}


def _foreign_keys(url: str) -> set[tuple[str, str]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {(table, column) for table in ("events", "incident_events")
                for fk in found.get_foreign_keys(table) for column in fk["constrained_columns"]}
    finally:
        engine.dispose()


def test_ingest_foreign_keys_only_on_sqlite_and_the_migration_reverts(db_url):
    engine = create_engine(db_url)
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()
    if db_url.startswith("sqlite"):
        assert _foreign_keys(db_url) == _INGEST_FKS  # SQLite keeps its (in-process, cheap) checks
        return
    assert _foreign_keys(db_url) == set()
    from alembic import command

    config = migrate.alembic_config(db_url)
    command.downgrade(config, "0002")
    assert _foreign_keys(db_url) == _INGEST_FKS
    command.upgrade(config, "heads")
    assert _foreign_keys(db_url) == set()


def test_rule_data_is_the_data_models_json_form():
    """`ValidEvent.data` (parsed back from the stored JSON) equals pydantic's JSON-mode dump."""
    events = [
        protocol.make_event("web.blocked", {"url": "http://b.example/", "categories": ["adult"]}),
        protocol.make_event("agent.heartbeat", {"agent_version": "1", "policy_version": 3,
                                                "collectors": {"usb": {"state": "ok"}}}),
        protocol.make_event("isuo.session", {"host": "emis.kg", "state": "start",
                                             "started_at": "2025-03-01T08:00:00+06:00"}),
        protocol.make_event("web.usage", {"period_start": "2025-01-01T08:00:00Z",
                                          "period_end": "2025-01-01T09:00:00Z", "counts": {"edu.kg": 2}}),
    ]
    checked = validate_batch([e.model_dump(mode="json") for e in events])
    for valid in checked:
        assert valid.data == valid.typed.model_dump(mode="json")


def _orphans(db) -> dict[str, int]:
    """References the dropped constraints used to check; each count must be 0."""
    queries = {
        "event without its workstation": "SELECT count(*) FROM events e WHERE NOT EXISTS "
                                         "(SELECT 1 FROM workstations w WHERE w.id = e.agent_id)",
        "link without its event": "SELECT count(*) FROM incident_events l WHERE NOT EXISTS "
                                  "(SELECT 1 FROM events e WHERE e.id = l.event_id)",
        "link without its incident": "SELECT count(*) FROM incident_events l WHERE NOT EXISTS "
                                     "(SELECT 1 FROM incidents i WHERE i.id = l.incident_id)",
    }
    return {name: db.scalar(text(sql)) for name, sql in queries.items()}


def test_ingest_and_retention_leave_no_dangling_reference(api):
    _, auth = api.enroll()
    old = datetime.now(UTC) - timedelta(days=120)
    subject = protocol.Subject(os_user="st1", seat="seat-1")
    blocked = {"url": "http://bad.example/", "categories": ["adult"]}
    attempts = [protocol.make_event("web.blocked", blocked, subject=subject,
                                    occurred_at=old + timedelta(seconds=i))
                for i in range(6)]
    api.post(auth, *attempts[:2])
    api.post(auth, *attempts[2:], protocol.make_event("web.report", {"url": "http://r.example/"}))
    with api.db() as db:
        assert _orphans(db) == dict.fromkeys(_orphans(db), 0)
        incident = db.scalar(select(Incident).where(Incident.rule == "web.blocked"))
        linked = set(db.scalars(select(IncidentEvent.event_id)
                                .where(IncidentEvent.incident_id == incident.id)))
        assert linked == {str(e.id) for e in attempts}  # counted across both batches, all linked
        resolve(db, incident_id=incident.id, viewer=Viewer.system(), reason="done")
        plan = apply_retention(db, actor="test", days=90)
        db.commit()
        assert plan.removable == {"web.blocked": 6}
        assert not set(db.scalars(select(Event.id).where(Event.id.in_(linked))))
        assert _orphans(db) == dict.fromkeys(_orphans(db), 0)


def test_fast_clause_check_never_accepts_what_the_exact_check_refuses():
    from policy_server.events.validation import validate_exactly

    cases = [["000 §5.4"], ["001 §2.7.1", "004 §3.6"], ["000 §5.4\n"], ["5.4"], ["000§5.4"], ["000 §5."],
             ["٠٠٠ §٥"], ["000 §1"] * 16, ["000 §1"] * 17, [""], [7]]
    for clauses in cases:
        item = protocol.make_event("web.report", {"url": "http://r.example/"}).model_dump(mode="json")
        item["clauses"] = clauses
        (fast,), exact = validate_batch([item]), validate_exactly(item, 0)
        assert isinstance(fast, str) == isinstance(exact, str), clauses
        if isinstance(exact, str):
            assert fast == exact  # the message comes from the exact check
        else:
            assert fast.clauses == exact.clauses == clauses
