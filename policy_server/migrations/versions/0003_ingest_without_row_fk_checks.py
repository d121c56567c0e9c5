"""PostgreSQL: no per-row foreign-key triggers on the ingest tables (events, incident_events)

On PostgreSQL every foreign key is a trigger that, for each inserted row, looks the parent
row up and locks it (`SELECT … FOR KEY SHARE`, which also dirties the parent's page).  On
the ingest path that was measured (benchmarks/server/RESULTS.md, "Fourth pass") at:

* `events.agent_id → workstations.id`: ~2.4 µs of the ~16 µs each event row costs;
* `incident_events.event_id → events.id` and `incident_id → incidents.id`: ~12 µs of the
  ~18 µs each link row costs (half the events of a lab's mix are linked).

The application keeps these references true by construction, which is why the checks can go:
an event's `agent_id` is the authenticated workstation (workstations are never deleted, 004
§3.6); links are written only by the incident engine, in the transaction that stores the
event or reads it back, to incidents it just inserted or selected (incidents are never
deleted); retention removes the links of an event before the event (db/retention.py).
`tests/server/test_ingest_schema.py` checks those invariants end to end.

SQLite keeps the constraints: its checks run inside the server process at a fraction of the
cost, and dropping them there would copy the whole events table.  The models keep their
`ForeignKey`s too: they order the ORM's flushes and document what refers to what.  (So
`alembic revision --autogenerate` on PostgreSQL proposes to add them back: do not.)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# (table, constraint name as PostgreSQL named it in 0001, column, referenced table, column)
_DROPPED = (
    ('events', 'events_agent_id_fkey', 'agent_id', 'workstations', 'id'),
    ('incident_events', 'incident_events_event_id_fkey', 'event_id', 'events', 'id'),
    ('incident_events', 'incident_events_incident_id_fkey', 'incident_id', 'incidents', 'id'),
)


def upgrade() -> None:
    if op.get_context().dialect.name != 'postgresql':
        return
    for table, name, *_ in _DROPPED:
        op.execute(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}')


def downgrade() -> None:
    if op.get_context().dialect.name != 'postgresql':
        return
    for table, name, column, parent, parent_column in _DROPPED:
        op.create_foreign_key(name, table, parent, [column], [parent_column])
