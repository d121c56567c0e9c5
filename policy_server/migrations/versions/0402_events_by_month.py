"""events_by_month: on PostgreSQL the events table becomes partitioned by month

Layout and the reasons for its key: policy_server/events/partitions.py.  On PostgreSQL, in
this revision's one transaction (Alembic runs PostgreSQL DDL transactionally, so a failure
anywhere leaves the old table as it was):

1. the old table is locked (`ACCESS EXCLUSIVE`: no insert can slip in between copy and swap)
   and renamed `events_unpartitioned`, its primary key and indexes renamed with it;
2. the new `events` is made: LIST by type (browsing / other), each RANGE by `occurred_at`
   month, with a DEFAULT partition on each level; a month partition for every month that
   has rows (from the year 2000 on; older or absurd times go to the default partition) and
   for the current month and the next (`partitions.AHEAD_MONTHS`);
3. every row is copied through the new table (each lands in its month), then the primary key
   (id, type, occurred_at) and the two indexes `ix_events_agent_time`, `ix_events_type_time`
   are built over the copied rows (faster than maintaining them row by row);
4. the copy is counted against the old table; a difference aborts the revision;
5. the old table is dropped.

SQLite: nothing (one table, DELETE-based retention).  `downgrade` copies back into a plain
table with primary key (id) (one row per id: the earliest received, should two rows share
an id with different times).

Revision ID: 0402_events_by_month
Revises: 0004
Create Date: 2026-12-05
"""
from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

revision = '0402_events_by_month'
down_revision = '0004'
branch_labels = None
depends_on = None

_COLUMNS = "id, agent_id, type, occurred_at, received_at, os_user, seat, data, clauses"
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def upgrade() -> None:
    if op.get_context().dialect.name != 'postgresql':
        return
    from policy_server.events import partitions as p

    bind = op.get_bind()
    run = lambda sql, **params: bind.execute(text(sql), params)  # noqa: E731
    run("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    run("ALTER TABLE events RENAME TO events_unpartitioned")
    run("ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_pkey TO events_unpartitioned_pkey")
    run("ALTER INDEX ix_events_agent_time RENAME TO ix_events_unpartitioned_agent_time")
    run("ALTER INDEX ix_events_type_time RENAME TO ix_events_unpartitioned_type_time")

    run("""CREATE TABLE events (
        id varchar(36) NOT NULL, agent_id varchar(36) NOT NULL, type varchar(64) NOT NULL,
        occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL,
        os_user varchar(64), seat varchar(64), data jsonb NOT NULL, clauses jsonb NOT NULL
    ) PARTITION BY LIST (type)""")
    browsing = ", ".join(f"'{t}'" for t in p.BROWSING_TYPES)
    run(f"CREATE TABLE events_browsing PARTITION OF events FOR VALUES IN ({browsing}) "
        "PARTITION BY RANGE (occurred_at)")
    run("CREATE TABLE events_other PARTITION OF events DEFAULT PARTITION BY RANGE (occurred_at)")
    run("CREATE TABLE events_browsing_default PARTITION OF events_browsing DEFAULT")
    run("CREATE TABLE events_other_default PARTITION OF events_other DEFAULT")

    now = datetime.now(UTC)
    last = p.add_months(p.month_start(now), p.AHEAD_MONTHS)
    months = run(f"SELECT DISTINCT type IN ({browsing}) AS b, date_trunc('month', occurred_at, 'UTC') AS m "
                 "FROM events_unpartitioned WHERE occurred_at >= :lo AND occurred_at < :hi",
                 lo=_EARLIEST, hi=p.add_months(last, 1)).all()
    for is_browsing, month in months:
        p.create_month(bind, "browsing" if is_browsing else "other", p.month_start(month))
    p.ensure_months(bind, now=now)

    run(f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM events_unpartitioned")
    run("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id, type, occurred_at)")
    run("CREATE INDEX ix_events_agent_time ON events (agent_id, occurred_at)")
    run("CREATE INDEX ix_events_type_time ON events (type, occurred_at)")
    before = run("SELECT count(*) FROM events_unpartitioned").scalar()
    after = run("SELECT count(*) FROM events").scalar()
    if before != after:
        raise RuntimeError(f"events_by_month: {before} rows in the old table but {after} copied; "
                           "nothing was changed (the revision's transaction is rolled back)")
    run("DROP TABLE events_unpartitioned")


def downgrade() -> None:
    if op.get_context().dialect.name != 'postgresql':
        return
    bind = op.get_bind()
    run = lambda sql: bind.execute(text(sql))  # noqa: E731
    run("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    run("""CREATE TABLE events_plain (
        id varchar(36) NOT NULL, agent_id varchar(36) NOT NULL, type varchar(64) NOT NULL,
        occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL,
        os_user varchar(64), seat varchar(64), data jsonb NOT NULL, clauses jsonb NOT NULL)""")
    run(f"INSERT INTO events_plain ({_COLUMNS}) SELECT DISTINCT ON (id) {_COLUMNS} FROM events "
        "ORDER BY id, received_at")
    run("DROP TABLE events")  # its partitions go with it
    run("ALTER TABLE events_plain RENAME TO events")
    run("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id)")
    run("CREATE INDEX ix_events_agent_time ON events (agent_id, occurred_at)")
    run("CREATE INDEX ix_events_type_time ON events (type, occurred_at)")
