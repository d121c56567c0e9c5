"""Database engines and sessions for SQLite (the embedded default) and PostgreSQL.

SQLite is tuned for a single busy writer with many readers: WAL journal, foreign keys on,
a generous busy timeout, and every transaction started with `BEGIN IMMEDIATE` so that two
writers queue for the lock instead of failing half-way with "database is locked" when a
read transaction tries to become a write one.  PostgreSQL needs nothing special.

`get_db` is the FastAPI dependency: one session per request, committed by the code that
changes something (service functions call `db.commit()` through their callers), rolled back
on error, always closed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from fastapi import Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUrlError(ValueError):
    pass


def check_db_url(url: str) -> str:
    """Reject URLs we cannot serve, with the fix in the message."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
        raise DatabaseUrlError(
            f"database URL {url!r} is not valid ({exc}); use e.g. "
            "'sqlite:////var/lib/kalkan-server/kalkan.sqlite' or "
            "'postgresql+psycopg://kalkan:PASSWORD@localhost/kalkan'"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise DatabaseUrlError(
            f"PostgreSQL URLs must name the psycopg driver: write 'postgresql+psycopg://…' instead of {url!r}"
        )
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(f"unsupported database {backend!r}; Kalkan runs on SQLite or PostgreSQL")
    return url


def make_engine(url: str, *, echo: bool = False) -> Engine:
    check_db_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            # Autocommit at the driver level: SQLAlchemy's "begin" hook below issues BEGIN itself.
            connect_args={"isolation_level": None, "check_same_thread": False,
                          "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=10,
            max_overflow=20,
        )
        _tune_sqlite(engine)
        return engine
    return create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes; WAL makes it safe
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    # Writers take turns to *ask* for the write lock.  SQLite lets one transaction write; a
    # connection that finds the lock taken polls for it (its busy handler sleeps 1…100 ms between
    # tries, first come is not first served), so with every thread of the process polling, a
    # steady stream of event batches starved the lesson ticker, the agents' filtering reports
    # and the health probe past the 30 s busy timeout ("database is locked", 503; /healthz
    # unavailable after a restart under load).  Here only one thread of the process at a time
    # runs BEGIN IMMEDIATE (and polls); the others wait on `turn` and go next, in the order the
    # OS wakes them.  `turn` is held only while BEGIN IMMEDIATE waits, never across the
    # transaction, so nothing can leave it taken.
    turn = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # `read_only_engine`: a deferred BEGIN takes no lock (WAL readers never block the writer)
        if conn.get_execution_options().get("kalkan_read_only"):
            conn.exec_driver_sql("BEGIN")
            return
        if not turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise OperationalError("BEGIN IMMEDIATE", None,
                                   sqlite3.OperationalError("database is locked (this process's other "
                                                            "writers waited past the busy timeout)"))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            turn.release()


def read_only_engine(engine: Engine) -> Engine:
    """The same engine for reads only: on SQLite its transactions take no write lock (for
    frequent reads such as a lesson's live seat map while agents' events are being stored)."""
    return engine.execution_options(kalkan_read_only=True)


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def get_db(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a session bound to the app's engine, closed after the request."""
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
