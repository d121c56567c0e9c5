"""Whether the server can do its job now, and the calm answer when it cannot.

`check(...)` is what `/healthz` reports:

* **database**: a real write (the one `health_probe` row updated and committed), so "ok"
  never hides a database that cannot store anything;
* **disk**: free space where the server keeps its state (the SQLite database, logs, keys);
  below `DISK_FULL_BYTES` nothing can be stored reliably (on SQLite small writes may still
  slip into the WAL file's old space while a batch fails), below `DISK_LOW_BYTES` it is a
  warning.

State: `ok` (200), `degraded` (200: disk low), `unavailable` (503: the database cannot
write, or the disk is full).  The result is kept `CACHE_S` so a busy poller costs one
write a second at most.

`unavailable_response` turns a database that cannot work (disk full, connection lost,
locked past the busy timeout) into a typed 503 with `Retry-After`, logged as one short
line, and then only once every `LOG_EVERY_S` with a count, instead of a traceback per
request.  The agent waits `Retry-After` and sends the same batch again: nothing is lost.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy import update

from policy_server.db.models import utcnow
from policy_server.health.models import HealthProbe

log = logging.getLogger("kalkan.server.health")

RETRY_AFTER_S = 5
CACHE_S = 1.0
LOG_EVERY_S = 30.0
DISK_FULL_BYTES = int(os.environ.get("KALKAN_DISK_FULL_BYTES", str(1024 * 1024)))
DISK_LOW_BYTES = int(os.environ.get("KALKAN_DISK_LOW_BYTES", str(500 * 1024 * 1024)))

try:  # the raw drivers' errors: db/bulk.py talks to the driver directly on the hot path
    import psycopg

    _RAW_UNAVAILABLE: tuple[type[BaseException], ...] = (sqlite3.OperationalError, psycopg.OperationalError,
                                                         psycopg.InterfaceError)
except ImportError:  # pragma: no cover - psycopg is a dependency
    _RAW_UNAVAILABLE = (sqlite3.OperationalError,)

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
    *_RAW_UNAVAILABLE,
)


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot work now (disk full, connection lost, locked, pool exhausted):
    retry later, no request or event is at fault."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    return isinstance(exc, OSError)  # e.g. ENOSPC writing a file


def short_error(exc: BaseException) -> str:
    """The error's class and first line, without the SQL and parameters SQLAlchemy appends."""
    inner = getattr(exc, "orig", None) or exc
    first = (str(inner).strip().splitlines() or [""])[0][:200]
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


@dataclass
class Health:
    status: str  # ok | degraded | unavailable
    database: dict[str, Any]
    disk: dict[str, Any]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200


def _probe_write(sessionmaker) -> str | None:
    """None if a real write committed, else why not."""
    try:
        with sessionmaker() as db:
            db.execute(update(HealthProbe).where(HealthProbe.id == 1).values(written_at=utcnow()))
            db.commit()
    except Exception as exc:  # noqa: BLE001 — any failure is the answer
        return short_error(exc)
    return None


def _disk(path: Path) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"path": str(path), "state": "unknown", "error": short_error(exc)}
    state = "full" if usage.free < DISK_FULL_BYTES else "low" if usage.free < DISK_LOW_BYTES else "ok"
    return {"path": str(path), "state": state, "free_bytes": usage.free, "total_bytes": usage.total}


def check(sessionmaker, *, dialect: str, state_dir: Path, sqlite_path: Path | None) -> Health:
    error = _probe_write(sessionmaker)
    disk = _disk(sqlite_path.parent if sqlite_path else state_dir)
    database = {"dialect": dialect, "writable": error is None}
    if error:
        database["error"] = error
    if error or disk["state"] == "full":
        status = "unavailable"
    elif disk["state"] in ("low", "unknown"):
        status = "degraded"
    else:
        status = "ok"
    return Health(status=status, database=database, disk=disk)


class HealthCache:
    """`check` at most once per `CACHE_S` (one write a second, whatever polls it)."""

    def __init__(self, sessionmaker, *, dialect: str, state_dir: Path, sqlite_path: Path | None) -> None:
        self._args = (sessionmaker,)
        self._kw = {"dialect": dialect, "state_dir": state_dir, "sqlite_path": sqlite_path}
        self._lock = threading.Lock()
        self._last: tuple[float, Health] | None = None

    def get(self) -> Health:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last[0] >= CACHE_S:
                self._last = (now, check(*self._args, **self._kw))
            return self._last[1]


class _RateLimitedLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0
        self._since = 0

    def note(self, request_path: str, exc: BaseException) -> None:
        with self._lock:
            self._since += 1
            now = time.monotonic()
            if now - self._last < LOG_EVERY_S:
                return
            count, self._since, self._last = self._since, 0, now
        log.warning("database unavailable (%s) on %s: answering 503, Retry-After %d s (%d such answer(s) "
                    "since the last line; the next line in %.0f s at most)",
                    short_error(exc), request_path, RETRY_AFTER_S, count, LOG_EVERY_S)


_unavailable_log = _RateLimitedLog()


def unavailable_response(request, exc: BaseException) -> JSONResponse:
    """The typed 503 for a database that cannot work now (an app exception handler)."""
    _unavailable_log.note(request.url.path, exc)
    return JSONResponse(
        {"detail": "the server cannot store anything right now (its database or disk is unavailable: "
                   f"{short_error(exc)}); nothing was changed: try again in {RETRY_AFTER_S} s",
         "code": "server.unavailable"},
        status_code=503, headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"})
