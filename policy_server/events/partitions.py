"""Month partitions of the events table on PostgreSQL (revision `0402_events_by_month`).

The layout (docs/server.md "Events by month"):

    events                      PARTITION BY LIST (type), primary key (id, type, occurred_at)
      events_browsing           FOR VALUES IN ('web.usage', 'web.blocked')  PARTITION BY RANGE (occurred_at)
        events_browsing_y2026m12  FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')  … one per month
        events_browsing_default   DEFAULT   (times outside every month made: a skewed clock)
      events_other              DEFAULT     PARTITION BY RANGE (occurred_at)
        events_other_y2026m12 …, events_other_default

Why the key is the event's own time (`occurred_at`, set by the agent when the event was made)
and not the server's receiving time: a retried delivery carries the same envelope, so the
same (id, type, occurred_at), so it lands in the same partition and `INSERT … ON CONFLICT
(id, type, occurred_at) DO NOTHING` refuses it exactly as the old `ON CONFLICT (id)` did —
however many months later the agent retries, with no second table to write and no probe of
every partition.  Retention of the records of minors' internet use is already by
`occurred_at` (db/retention.py), so a whole month of `events_browsing` past the cut-off is
dropped with one `DROP TABLE` instead of millions of row deletions.  `events_other` months are
never dropped: they hold the security and fleet events, kept (004 §3.6), beside the few
retained types that are not browsing branch (`web.alert`, `web.unblock_request`, `web.report`,
`net.bypass`), which retention DELETEs row by row.

Partitions are made ahead (`ensure_months`, the periodic job `events.partitions` and the
migration: the current month and `AHEAD_MONTHS` after it).  A row whose month has no
partition yet goes to the branch's DEFAULT partition; making that month later moves those
rows into it first (PostgreSQL refuses to attach a range the default partition still holds).

SQLite keeps one plain table and DELETE-based retention: nothing here runs there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

BROWSING_TYPES = ("web.usage", "web.blocked")
BRANCHES = ("browsing", "other")
AHEAD_MONTHS = 1  # the job runs hourly: this month and the next always exist
_MONTH_NAME = re.compile(r"^events_(browsing|other)_y(\d{4})m(\d{2})$")
COLUMNS = "id, agent_id, type, occurred_at, received_at, os_user, seat, data, clauses"


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + (month.month - 1) + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(branch: str, month: datetime) -> str:
    return f"events_{branch}_y{month.year:04d}m{month.month:02d}"


@dataclass(frozen=True)
class MonthPartition:
    name: str
    branch: str  # "browsing" or "other"
    month: datetime  # first instant of the month, UTC

    @property
    def upper(self) -> datetime:
        return add_months(self.month, 1)


def is_partitioned(connection: Connection) -> bool:
    """True on PostgreSQL once `0402_events_by_month` ran."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(connection.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = 'events' AND c.relnamespace = to_regnamespace(current_schema())::oid)")).scalar())


def month_partitions(connection: Connection, branch: str | None = None) -> list[MonthPartition]:
    """The month partitions that exist, oldest first (defaults left out)."""
    rows = connection.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname IN ('events_browsing', 'events_other') "
        "AND p.relnamespace = to_regnamespace(current_schema())::oid")).scalars()
    out = []
    for name in rows:
        match = _MONTH_NAME.match(name)
        if match and (branch is None or match.group(1) == branch):
            out.append(MonthPartition(name, match.group(1),
                                      datetime(int(match.group(2)), int(match.group(3)), 1, tzinfo=UTC)))
    return sorted(out, key=lambda p: (p.month, p.branch))


def create_month(connection: Connection, branch: str, month: datetime) -> bool:
    """Make one month's partition of a branch (False when it exists); rows of that month
    waiting in the branch's default partition move into it, in the caller's transaction."""
    name = partition_name(branch, month)
    if connection.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None:
        return False
    lower, upper = month.isoformat(), add_months(month, 1).isoformat()
    default = f"events_{branch}_default"
    # A table of its own first, filled from the default partition, then attached: attaching
    # checks the default partition holds nothing of the month any more.
    connection.execute(text(f"CREATE TABLE {name} (LIKE events_{branch} INCLUDING DEFAULTS)"))
    connection.execute(text(
        f"WITH moved AS (DELETE FROM {default} WHERE occurred_at >= :lo AND occurred_at < :hi "
        f"RETURNING {COLUMNS}) INSERT INTO {name} ({COLUMNS}) SELECT {COLUMNS} FROM moved"),
        {"lo": lower, "hi": upper})
    connection.execute(text(f"ALTER TABLE events_{branch} ATTACH PARTITION {name} "
                            f"FOR VALUES FROM ('{lower}') TO ('{upper}')"))
    return True


def ensure_months(connection: Connection, *, now: datetime, ahead: int = AHEAD_MONTHS) -> list[str]:
    """The current month and `ahead` months after it exist in both branches; returns the names made."""
    made = []
    first = month_start(now)
    for n in range(ahead + 1):
        month = add_months(first, n)
        for branch in BRANCHES:
            if create_month(connection, branch, month):
                made.append(partition_name(branch, month))
    return made


def partitions_job(db, now: datetime) -> list[str]:
    """Periodic job `events.partitions`: months ahead made (PostgreSQL, partitioned); a no-op elsewhere."""
    connection = db.connection()
    if not is_partitioned(connection):
        return []
    made = ensure_months(connection, now=now)
    db.commit()
    return made


def droppable_browsing(connection: Connection, *, cutoff: datetime) -> list[MonthPartition]:
    """Browsing month partitions that end at or before the cut-off: every row in them is old."""
    return [p for p in month_partitions(connection, "browsing") if p.upper <= cutoff]


def drop_browsing_month(connection: Connection, partition: MonthPartition, *, keep_ids_sql: str) -> int:
    """Detach and drop one browsing month; rows whose id is in `keep_ids_sql` (held by an
    open incident) are first moved to `events_browsing_default`, where they stay.  Returns
    how many rows were kept."""
    name = partition.name
    connection.execute(text(f"ALTER TABLE events_browsing DETACH PARTITION {name}"))
    kept = connection.execute(text(
        f"WITH held AS (INSERT INTO events_browsing_default ({COLUMNS}) SELECT {COLUMNS} FROM {name} "
        f"WHERE id IN ({keep_ids_sql}) RETURNING 1) SELECT count(*) FROM held")).scalar() or 0
    connection.execute(text(f"DROP TABLE {name}"))
    return int(kept)


def partition_jobs(settings) -> list:
    """The periodic job making months ahead (runs hourly; cheap when nothing is to be made)."""
    from policy_server.checks.scheduler import Job

    return [Job(name="events.partitions", interval_s=3600.0, run=partitions_job)]
