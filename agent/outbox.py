"""The agent's durable outbox: every event is written here before anything else.

One SQLite database (WAL mode) in the state dir (`agent.state.StatePaths.outbox`).
Writers are the agent's collectors (threads of the agent process) and the filtering
proxy (its own mitmdump process), so every write is one short `BEGIN IMMEDIATE`
transaction: SQLite's file locks serialise processes, a mutex serialises threads
sharing one `Outbox`.  `add()` returns only after the transaction is committed with
`synchronous=FULL`, so an event that `add()` accepted survives a crash or power cut.

The uplink reads with `peek_batch()` and deletes with `remove()` only what the
server answered accepted or duplicate (at-least-once delivery; the server stores
each id once).  Events the server rejected go to the `rejected` table, kept for
`kalkan-agent status`, never retried forever and never silently lost.

Disk is bounded (`max_bytes`, the sum of stored event bodies).  When a new event
does not fit, the least valuable events go first (`protocol.event_priority`:
heartbeats and progress first, security events last; oldest first within a
priority); if only more valuable events are left, the new event itself is dropped.
Every drop is counted by type: `report_drops()` turns the counts not yet reported
into one `agent.events_dropped` event, and `drop_totals()` feeds the heartbeat.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy_server.protocol import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    EventEnvelope,
    EventsDropped,
    Subject,
    event_priority,
    make_event,
)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_value ON events (priority, seq);
-- Running totals kept by triggers, so depth and size are O(1) whatever wrote the row.
CREATE TABLE IF NOT EXISTS totals (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals (key, value) VALUES ('count', 0), ('bytes', 0);
CREATE TRIGGER IF NOT EXISTS events_added AFTER INSERT ON events BEGIN
    UPDATE totals SET value = value + 1 WHERE key = 'count';
    UPDATE totals SET value = value + NEW.size WHERE key = 'bytes';
END;
CREATE TRIGGER IF NOT EXISTS events_removed AFTER DELETE ON events BEGIN
    UPDATE totals SET value = value - 1 WHERE key = 'count';
    UPDATE totals SET value = value - OLD.size WHERE key = 'bytes';
END;
-- Drops by type: `pending` not yet reported in an agent.events_dropped event, `total` ever.
CREATE TABLE IF NOT EXISTS drops (
    type    TEXT PRIMARY KEY,
    pending INTEGER NOT NULL DEFAULT 0,
    total   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rejected (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    error       TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""


class OutboxError(ValueError):
    """An event the outbox refuses to store (too large, malformed)."""


@dataclass(frozen=True)
class StoredEvent:
    """One event waiting in the outbox; `body` is the envelope's JSON, ready to send."""

    seq: int
    id: str
    type: str
    body: str


@dataclass(frozen=True)
class RejectedRecord:
    id: str
    type: str
    error: str
    rejected_at: float


class Outbox:
    """The durable, bounded event queue.  Safe to share between threads; open one per process."""

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < MAX_EVENT_BYTES:
            raise ValueError(f"outbox max_bytes={max_bytes} is smaller than one event may be "
                             f"({MAX_EVENT_BYTES}); give at least that")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed add() is on disk even after a power cut, not only after a crash.
        self._db.execute("PRAGMA synchronous = FULL")
        with self._write():
            for statement in _split_sql(_SCHEMA):
                self._db.execute(statement)

    # ------------------------------------------------------------------ plumbing

    def _write(self):
        """One serialised write transaction (threads via the mutex, processes via SQLite)."""
        return _Transaction(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def add(self, envelope: EventEnvelope) -> bool:
        """Store one event durably.  False when the outbox was full and this event was the
        least valuable one (it was dropped and counted); True when it is stored."""
        return self.add_many([envelope])[0]

    def add_many(self, envelopes: Iterable[EventEnvelope]) -> list[bool]:
        """Store several events in one transaction (one fsync); per event as `add()`."""
        rows = [self._row(envelope) for envelope in envelopes]
        with self._write():
            return [self._insert(row) for row in rows]

    @staticmethod
    def _row(envelope: EventEnvelope) -> tuple[str, str, int, int, str]:
        if not isinstance(envelope, EventEnvelope):
            raise OutboxError(f"the outbox stores EventEnvelope objects, not {type(envelope).__name__}; "
                              "build one with protocol.make_event() or use OutboxSink.emit()")
        body = envelope.model_dump_json()
        size = len(body.encode())
        if size > MAX_EVENT_BYTES:
            raise OutboxError(f"event {envelope.type} is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit "
                              "of one event; send less data (e.g. counts instead of lists)")
        return str(envelope.id), envelope.type, event_priority(envelope.type), size, body

    def _insert(self, row: tuple[str, str, int, int, str]) -> bool:
        event_id, event_type, priority, size, body = row
        if not self._make_room(size, priority):
            self._count_drops({event_type: 1})
            return False
        self._db.execute(
            "INSERT OR IGNORE INTO events (id, type, priority, size, body, created_at) VALUES (?,?,?,?,?,?)",
            (event_id, event_type, priority, size, body, time.time()),
        )
        return True

    def _make_room(self, size: int, priority: int) -> bool:
        """Evict less (or equally) valuable, older events until `size` more bytes fit.
        Returns False, evicting nothing, if even that would not free enough."""
        used = self._total("bytes")
        need = used + size - self.max_bytes
        if need <= 0:
            return True
        victims: list[tuple[int, str]] = []
        freed = 0
        cursor = self._db.execute(
            "SELECT seq, type, size FROM events WHERE priority <= ? ORDER BY priority, seq", (priority,)
        )
        for seq, event_type, victim_size in cursor:
            victims.append((seq, event_type))
            freed += victim_size
            if freed >= need:
                break
        cursor.close()
        if freed < need:
            return False
        self._db.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq, _ in victims])
        counts: dict[str, int] = {}
        for _, event_type in victims:
            counts[event_type] = counts.get(event_type, 0) + 1
        self._count_drops(counts)
        return True

    def _count_drops(self, counts: dict[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO drops (type, pending, total) VALUES (?, ?, ?) ON CONFLICT (type) "
            "DO UPDATE SET pending = pending + excluded.pending, total = total + excluded.total",
            [(event_type, n, n) for event_type, n in counts.items()],
        )

    def _total(self, key: str) -> int:
        return self._db.execute("SELECT value FROM totals WHERE key = ?", (key,)).fetchone()[0]

    def report_drops(self, *, subject: Subject | None = None) -> dict[str, int]:
        """Turn the drops not yet reported into one `agent.events_dropped` event, in the same
        transaction that marks them reported.  Returns the counts reported ({} if none)."""
        with self._write():
            pending = dict(self._db.execute("SELECT type, pending FROM drops WHERE pending > 0").fetchall())
            if not pending:
                return {}
            event = make_event(
                "agent.events_dropped",
                EventsDropped(counts=pending, outbox_bytes=self._total("bytes")),
                subject=subject,
            )
            row = self._row(event)
            # If even this report does not fit (the outbox is full of security events), the
            # counts stay pending for the next try; the heartbeat's totals carry them meanwhile.
            if not self._make_room(row[3], row[2]):
                return {}
            self._db.execute(
                "INSERT INTO events (id, type, priority, size, body, created_at) VALUES (?,?,?,?,?,?)",
                (*row, time.time()),
            )
            self._db.executemany("UPDATE drops SET pending = pending - ? WHERE type = ?",
                                 [(n, event_type) for event_type, n in pending.items()])
            return pending

    def remove(self, ids: Iterable[str]) -> int:
        """Delete delivered events (accepted or duplicate on the server).  Returns how many."""
        keys = [(str(event_id),) for event_id in ids]
        if not keys:
            return 0
        with self._write():
            before = self._total("count")
            self._db.executemany("DELETE FROM events WHERE id = ?", keys)
            return before - self._total("count")

    def reject(self, event_id: str, error: str) -> bool:
        """Move an event the server rejected aside, with the server's reason."""
        with self._write():
            row = self._db.execute("SELECT type, body FROM events WHERE id = ?", (str(event_id),)).fetchone()
            if row is None:
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO rejected (id, type, body, error, rejected_at) VALUES (?,?,?,?,?)",
                (str(event_id), row[0], row[1], error[:2000], time.time()),
            )
            self._db.execute("DELETE FROM events WHERE id = ?", (str(event_id),))
            return True

    # ------------------------------------------------------------------ reading

    def peek_batch(self, max_events: int = 500, max_bytes: int = 1024 * 1024, *,
                   after_seq: int | None = None) -> list[StoredEvent]:
        """The oldest events (after `after_seq`, if given), at most `max_events` and (but for a
        single larger one) `max_bytes` of bodies.  Nothing is removed: call `remove()` with
        what the server confirmed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, type, size, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (-1 if after_seq is None else after_seq, max_events),
            ).fetchall()
        batch: list[StoredEvent] = []
        used = 0
        for seq, event_id, event_type, size, body in rows:
            if batch and used + size > max_bytes:
                break
            batch.append(StoredEvent(seq, event_id, event_type, body))
            used += size
        return batch

    def depth(self) -> int:
        """How many events wait to be sent."""
        with self._lock:
            return self._total("count")

    def size_bytes(self) -> int:
        """The bytes of event bodies stored (what `max_bytes` bounds)."""
        with self._lock:
            return self._total("bytes")

    def drop_totals(self) -> dict[str, int]:
        """Every drop ever, by event type (the heartbeat's `dropped_events`)."""
        with self._lock:
            return dict(self._db.execute("SELECT type, total FROM drops WHERE total > 0").fetchall())

    def pending_drops(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT type, pending FROM drops WHERE pending > 0").fetchall())

    def rejected(self, limit: int = 100) -> list[RejectedRecord]:
        """Events the server rejected, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, type, error, rejected_at FROM rejected ORDER BY rejected_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [RejectedRecord(*row) for row in rows]

    def rejected_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]


class _Transaction:
    """`with` block: BEGIN IMMEDIATE … COMMIT (ROLLBACK on error), holding the thread mutex."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


def _split_sql(script: str) -> list[str]:
    """Split the schema into statements (triggers contain `;` inside BEGIN … END)."""
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current)
        if stripped.endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements


class OutboxSink:
    """`agent.collectors.base.EventSink` over an `Outbox`: validates the data against its
    event type's model (a collector bug fails loudly where it happens), builds the envelope
    with `protocol.make_event`, stores it durably, and returns the event id.

    `seat`, if given, goes into every event's subject that lacks one (the seat this
    workstation was enrolled as; `open_sink()` reads it from the state dir).
    `on_added`, if given, is called after each stored event (the runtime wakes the uplink)."""

    def __init__(self, outbox: Outbox, on_added: Any = None, *, seat: str | None = None) -> None:
        self.outbox = outbox
        self.seat = seat
        self._on_added = on_added

    def emit(
        self,
        event_type: str,
        data: Any,
        *,
        subject: Subject | None = None,
        clauses: list[str] | None = None,
    ) -> str:
        if event_type not in EVENT_TYPES:
            raise OutboxError(f"unknown event type {event_type!r}; declare it in policy_server/protocol.py "
                              f"EVENT_TYPES (known: {', '.join(sorted(EVENT_TYPES))})")
        if self.seat and (subject is None or subject.seat is None):
            subject = Subject(os_user=subject.os_user if subject else None, seat=self.seat)
        envelope = make_event(event_type, data, subject=subject, clauses=clauses)
        self.outbox.add(envelope)
        if self._on_added is not None:
            self._on_added()
        return str(envelope.id)


def open_sink(state_dir: Path | str | None = None) -> OutboxSink:
    """The outbox sink of an agent's state dir, for another process (the filtering proxy):
    events get the enrolled seat.  `state_dir` None: $KALKAN_AGENT_STATE or the default."""
    from agent.state import AgentState, StatePaths  # here: agent.state is not needed otherwise

    state = AgentState(StatePaths.from_option(state_dir))
    seat = state.load_config().seat if state.paths.config.is_file() else None
    return OutboxSink(Outbox(state.paths.outbox), seat=seat)
