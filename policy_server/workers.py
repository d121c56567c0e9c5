"""Several server worker processes on PostgreSQL (`kalkan-server run --workers N`).

One Python process is the ingest limit on PostgreSQL (its GIL: benchmarks/server/RESULTS.md),
so `run` can start N uvicorn workers sharing the listening socket.  What is process-global
stays right this way:

* **once, before forking** (`cli.cmd_run`): migrations, the TLS certificate, the school CA.
  Workers are made by `worker_app` with `migrate_on_start=False`.
* **policy push**: every worker's hub LISTENs on PostgreSQL for the `NOTIFY` that
  `amend_policy` sends in its transaction (policies/push.py), so an agent connected to any
  worker hears of a change made in any process.
* **periodic checks**: `LeaderChecks` runs them only in the worker holding a PostgreSQL
  advisory lock on a connection of its own; if that worker dies, its connection closes, the
  lock is freed and another worker takes over at its next try.

SQLite has one writer and no LISTEN, so it keeps one process (`default_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Connection, Engine, text

from policy_server.health.service import short_error
from policy_server.settings import Settings

log = logging.getLogger("kalkan.workers")

SETTINGS_ENV = "KALKAN_WORKER_SETTINGS"  # the parent's Settings, as JSON, for the workers
POSTGRES_MAX_AUTO_WORKERS = 2
CHECKS_LOCK_KEY = 0x4B414C4B414E  # "KALKAN": the advisory lock of the periodic-checks leader
LEADER_RETRY_S = 30.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkersError(ValueError):
    pass


def default_workers(database_url: str, cpus: int | None = None) -> int:
    """`--workers auto`: 1 on SQLite (one writer); on PostgreSQL one per core, up to 2.

    Measured on the 2-core reference machine (benchmarks/server/RESULTS.md, quiet run): 2
    workers took 24,100–25,400 events/s where 1 took 16,500–24,200 — the second process uses
    the core that one process leaves idle while it waits for PostgreSQL.  Under other load the
    two were equal, never worse.  More than 2 only wait on each other and on PostgreSQL here."""
    if database_url.startswith("sqlite"):
        return 1
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(POSTGRES_MAX_AUTO_WORKERS, cpus))


def check_workers(workers: int, database_url: str) -> int:
    if workers < 1:
        raise WorkersError(f"--workers {workers}: give 1 or more, or leave it out (auto)")
    if workers > 1 and database_url.startswith("sqlite"):
        raise WorkersError(f"--workers {workers} needs PostgreSQL: SQLite has a single writer, so "
                           "more processes only wait on each other; leave --workers out or give --db "
                           "postgresql+psycopg://…")
    return workers


# ----------------------------------------------------------------------------- worker side


def settings_to_env(settings: Settings) -> str:
    values = dataclasses.asdict(settings)
    values["state_dir"] = str(settings.state_dir)
    return json.dumps(values)


def settings_from_env() -> Settings:
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise WorkersError(f"{SETTINGS_ENV} is not set: workers are started by "
                           "`kalkan-server run --workers N`")
    values = json.loads(raw)
    values["state_dir"] = Path(values["state_dir"])
    return Settings(**values)


def worker_app() -> FastAPI:
    """uvicorn's app factory in each worker (`policy_server.workers:worker_app`)."""
    from policy_server.app import create_app
    from policy_server.cli import _tune_gc

    _die_with_parent()
    settings = dataclasses.replace(settings_from_env(), migrate_on_start=False)  # the parent migrated
    app = create_app(settings)
    app.state.checks = LeaderChecks(app.state.checks, app.state.engine)
    _tune_gc()
    return app


def _die_with_parent() -> None:
    """If the supervising `kalkan-server run` is killed (SIGKILL, OOM), its workers go too:
    orphans would keep the port and the database connections of a server that is gone."""
    parent = multiprocessing.parent_process()  # uvicorn's supervisor (spawned workers)
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere uvicorn's own care
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent.pid:  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGKILL)


class LeaderChecks:
    """Runs `inner` (a CheckScheduler) only while this process holds the leader lock."""

    def __init__(self, inner, engine: Engine, *, retry_s: float = LEADER_RETRY_S) -> None:
        self.inner = inner
        self.engine = engine
        self.retry_s = retry_s
        self.leading = False
        self._connection: Connection | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if not self.inner.jobs:
            return
        self._task = asyncio.create_task(self._campaign(), name="kalkan-checks-leader")

    async def _campaign(self) -> None:
        while not self.leading:
            try:
                self.leading = await asyncio.to_thread(self._try_lock)
            except Exception as exc:  # noqa: BLE001 — the database may be briefly away; try again later
                log.warning("periodic checks: could not ask for the leader lock (%s)", short_error(exc))
            if self.leading:
                log.info("periodic checks run in this worker (pid %d)", os.getpid())
                await self.inner.start()
                return
            await asyncio.sleep(self.retry_s)

    def _try_lock(self) -> bool:
        # A connection of its own, held while leading: the lock is released when it closes,
        # also when this process dies.
        connection = self.engine.connect()
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": CHECKS_LOCK_KEY}).scalar()
        connection.commit()  # end the transaction; a session-level advisory lock outlives it
        if got:
            self._connection = connection
        else:
            connection.close()
        return bool(got)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leading:
            await self.inner.stop()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.to_thread(_release, connection)
            self.leading = False


def _release(connection: Connection) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": CHECKS_LOCK_KEY})
        connection.commit()
    except Exception:  # noqa: BLE001 — never hand a connection that may still hold it back to the pool
        connection.invalidate()
    connection.close()
