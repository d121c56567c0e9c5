"""`db/bulk.py`: rows written through the driver read back through the ORM unchanged, on
SQLite and PostgreSQL (times, JSON, NULLs, quotes), and updates hit only their rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from policy_server.db.bulk import ANY_CONFLICT, Json, insert_rows, sqlite_utc_text, update_rows
from policy_server.db.models import AuditRecord, Event, TimelineEntry

TIMES = [
    datetime(2025, 1, 1, 8, 0, tzinfo=UTC),
    datetime(999, 3, 4, 5, 6, 7, 1, tzinfo=timezone(timedelta(hours=6))),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3))),
]


def test_sqlite_time_text_is_what_sqlalchemy_writes():
    dialect = sqlite.dialect()
    process = Event.__table__.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert [sqlite_utc_text(t) for t in TIMES] == [process(t) for t in TIMES]
    with pytest.raises(ValueError, match="naive datetime"):
        sqlite_utc_text(datetime(2025, 1, 1))


def test_rows_written_by_the_driver_read_back_through_the_orm(api):
    agent_id, _ = api.enroll()
    made = Json('{"url": "http://x/\\u00e9", "n": 1}')  # JSON text made already: stored as is
    rows = [
        (f"00000000-0000-4000-8000-00000000000{i}", agent_id, "web.report", t, TIMES[0],
         None if i else "st'1", 'seat "2"', made if i == 0 else {"url": "é", "list": [1, None]}, ["000 §8.3"])
        for i, t in enumerate(TIMES)
    ]
    columns = ("id", "agent_id", "type", "occurred_at", "received_at", "os_user", "seat", "data", "clauses")
    with api.db() as db:
        connection = db.connection()
        if connection.dialect.name == "sqlite":
            with pytest.raises(ValueError, match="no on_conflict_do_nothing"):
                insert_rows(connection, Event.__table__, columns, rows, returning=("id",))
            assert insert_rows(connection, Event.__table__, columns, rows) == []
        else:  # twice: the second time every id conflicts and nothing comes back
            assert len(insert_rows(connection, Event.__table__, columns, rows,
                                   on_conflict_do_nothing=ANY_CONFLICT, returning=("id",))) == 3
            assert insert_rows(connection, Event.__table__, columns, rows,
                               on_conflict_do_nothing=ANY_CONFLICT, returning=("id",)) == []
        db.commit()
    with api.db() as db:
        stored = {e.id: e for e in db.scalars(select(Event))}
    for row in rows:
        event = stored[row[0]]
        assert event.occurred_at == row[3] and event.occurred_at.tzinfo is not None
        assert (event.os_user, event.seat, event.clauses) == (row[5], row[6], ["000 §8.3"])
    assert stored[rows[0][0]].data == {"url": "http://x/é", "n": 1}
    assert stored[rows[1][0]].data == {"url": "é", "list": [1, None]}


def test_update_rows_changes_only_the_keyed_rows(api):
    with api.db() as db:
        records = [AuditRecord(actor="a", action="x", target=str(i), detail={"i": i}) for i in range(4)]
        db.add_all(records)
        db.commit()
        ids = [r.id for r in records]
    when = datetime(2025, 5, 5, 5, 5, tzinfo=UTC)
    with api.db() as db:
        update_rows(db.connection(), AuditRecord.__table__, "id", ("target", "at", "detail"),
                    [(ids[1], "one", when, {"changed": True}), (ids[3], "three", when, {"q": 'it\'s "x"'})])
        update_rows(db.connection(), TimelineEntry.__table__, "id", ("actor",), [])  # nothing: no error
        db.commit()
    with api.db() as db:
        records = db.scalars(select(AuditRecord).where(AuditRecord.id.in_(ids)))
        got = {r.id: (r.target, r.detail) for r in records}
        assert got == {ids[0]: ("0", {"i": 0}), ids[1]: ("one", {"changed": True}),
                       ids[2]: ("2", {"i": 2}), ids[3]: ("three", {"q": 'it\'s "x"'})}
        assert db.get(AuditRecord, ids[1]).at == when


def test_constant_columns_are_stored_in_every_row(api):
    """`constants=`: one value for all rows (sent once on PostgreSQL), times and JSON included."""
    agent_id, _ = api.enroll()
    rows = [(f"00000000-0000-4000-8000-0000000001{i:02}", t, {"n": i}) for i, t in enumerate(TIMES)]
    constants = {"agent_id": agent_id, "type": "web.report", "received_at": TIMES[1], "clauses": ["000 §8.3"]}
    with api.db() as db:
        connection = db.connection()
        extra = {} if connection.dialect.name == "sqlite" else {"on_conflict_do_nothing": ANY_CONFLICT,
                                                                   "returning": ("id",)}
        insert_rows(connection, Event.__table__, ("id", "occurred_at", "data"), rows,
                    constants=constants, **extra)
        db.commit()
    with api.db() as db:
        stored = {e.id: e for e in db.scalars(select(Event))}
    assert len(stored) == 3
    for event_id, occurred_at, data in rows:
        event = stored[event_id]
        assert (event.agent_id, event.type, event.clauses) == (agent_id, "web.report", ["000 §8.3"])
        assert event.data == data
        assert event.received_at == TIMES[1] and event.occurred_at == occurred_at
