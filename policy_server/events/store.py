"""Storing a batch of validated events, each id once.

The rows go through the driver directly (`db.bulk.insert_rows`), inside the session's
transaction, so they commit or roll back with everything else of the batch:

* **SQLite**: every transaction starts with `BEGIN IMMEDIATE` (db/session.py), so this one
  is the only writer: the ids already stored are read first (`SELECT id … WHERE id IN …`),
  then the new rows go in with a plain `INSERT`.  Plain, not `ON CONFLICT DO NOTHING`: if
  that reasoning were ever wrong the batch fails (and the agent retries) rather than an id
  being answered "accepted" without being stored.
* **PostgreSQL**: one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING id`.
  A concurrent post of the same ids waits on the first one's row locks and then inserts
  nothing: the ids it did not get back are duplicates.  The conflict is named by no column
  list because the unique key differs: `(id)` on a plain table, `(id, type, occurred_at)`
  once the table is partitioned by month (revision `0402_events_by_month`,
  events/partitions.py) — a retry carries the same envelope, so the same key, and the same
  partition.  `events` has no other unique index, so nothing else is swallowed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from policy_server.db.bulk import ANY_CONFLICT, Json, insert_rows
from policy_server.db.models import Event
from policy_server.events.validation import ValidEvent

_SQLITE_IN_CHUNK = 500  # ids per `IN (…)`; SQLite allows 32,766 bound parameters
_COLUMNS = ("id", "type", "occurred_at", "os_user", "data", "clauses")  # + agent_id, seat, received_at


def insert_new_events(db: Session, *, agent_id: str, received_at: datetime,
                      events: list[ValidEvent], seat: str | None = None) -> set[str]:
    """Store the events whose id is new (ids must be distinct); return the ids stored now.

    `seat` is the agent's enrolled seat, stored on every row: never the seat an event's
    body claims (agents/binding.py)."""
    if not events:
        return set()
    connection = db.connection()  # begins the session's transaction (BEGIN IMMEDIATE on SQLite)
    table = Event.__table__
    same = {"agent_id": agent_id, "seat": seat, "received_at": received_at}  # one batch, one agent
    if connection.dialect.name == "postgresql":
        returned = insert_rows(connection, table, _COLUMNS, _rows(events), constants=same,
                               on_conflict_do_nothing=ANY_CONFLICT, returning=("id",))
        return {row[0] for row in returned}
    stored = _stored_ids(connection, [e.id for e in events])
    new = [e for e in events if e.id not in stored]
    insert_rows(connection, table, _COLUMNS, _rows(new), constants=same)
    return {e.id for e in new}


def _rows(events: list[ValidEvent]) -> list[tuple]:
    return [(e.id, e.type, e.occurred_at, e.os_user, Json(e.data_json), Json(e.clauses_json))
            for e in events]


def _stored_ids(connection, ids: list[str]) -> set[str]:
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        stored: set[str] = set()
        for start in range(0, len(ids), _SQLITE_IN_CHUNK):
            chunk = ids[start:start + _SQLITE_IN_CHUNK]
            found = cursor.execute(f"SELECT id FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            stored.update(row[0] for row in found)
        return stored
    finally:
        cursor.close()
