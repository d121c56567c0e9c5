"""Several server worker processes on PostgreSQL (`kalkan-server run --workers N`).

One Python process is the ingest limit on PostgreSQL (its GIL: benchmarks/server/RESULTS.md),
so `run` can start N uvicorn workers sharing the listening socket.  What is process-global
stays right this way:

* **once, before forking** (`cli.cmd_run`): migrations, the TLS certificate, the school CA.
  Workers are made by `worker_app` with `migrate_on_start=False`.
* **policy push**: every worker's hub LISTENs on PostgreSQL for the `NOTIFY` that
  `amend_policy` sends in its transaction (policies/push.py), so an agent connected to any
  worker hears of a change made in any process.
* **periodic checks** (and the lessons' clock): `LeaderChecks` runs them only in the process
  holding a PostgreSQL advisory lock on a connection of its own; if that process dies, its
  connection closes, the lock is freed and another worker — or another replica on another
  host (docs/operations.md "Scale out") — takes over at its next try (`KALKAN_LEADER_RETRY_S`).

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
LEADER_RETRY_S = float(os.environ.get("KALKAN_LEADER_RETRY_S", "5"))  # a new leader within this
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
    app = create_app(settings)  # on PostgreSQL it runs its checks under `LeaderChecks`
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
    """Runs `inner` (a CheckScheduler) — and the services in `also` (the lessons' clock) —
    only while this process holds the leader lock.

    The same lock serves the workers of one host and the replicas on several hosts (one
    PostgreSQL): whoever holds it leads.  The leader checks its lock connection every
    `retry_s`; if that connection is gone (PostgreSQL restarted, the network cut) the lock
    is gone too, so it stops its jobs at once and campaigns again like everyone else."""

    def __init__(self, inner, engine: Engine, *, retry_s: float | None = None, also=()) -> None:
        self.inner = inner
        self.also = list(also)
        self.engine = engine
        self.retry_s = LEADER_RETRY_S if retry_s is None else retry_s
        self.leading = False
        self.terms = 0  # how many times this process became the leader
        self._connection: Connection | None = None
        self._task: asyncio.Task | None = None

    @property
    def jobs(self):
        return self.inner.jobs

    @jobs.setter
    def jobs(self, jobs) -> None:
        self.inner.jobs = jobs

    async def start(self) -> None:
        if not self.inner.jobs and not self.also:
            return
        self._task = asyncio.create_task(self._campaign(), name="kalkan-checks-leader")

    async def _campaign(self) -> None:
        while True:
            while not self.leading:
                try:
                    self.leading = await asyncio.to_thread(self._try_lock)
                except Exception as exc:  # noqa: BLE001 — the database may be briefly away; try again later
                    log.warning("periodic checks: could not ask for the leader lock (%s)", short_error(exc))
                if not self.leading:
                    await asyncio.sleep(self.retry_s)
            self.terms += 1
            log.info("periodic checks run in this process (pid %d): it holds the leader lock", os.getpid())
            await self.inner.start()
            for service in self.also:
                await service.start()
            while await asyncio.to_thread(self._still_holding):
                await asyncio.sleep(self.retry_s)
            log.warning("periodic checks: the leader lock's connection is gone; stopping them here "
                        "and asking for the lock again")
            await self._step_down()

    def _still_holding(self) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            connection.execute(text("SELECT 1"))
            connection.commit()
            return True
        except Exception:  # noqa: BLE001 — a dead connection: the server freed the lock with it
            with contextlib.suppress(Exception):
                connection.invalidate()
                connection.close()
            self._connection = None
            return False

    async def _step_down(self) -> None:
        for service in reversed(self.also):
            await service.stop()
        await self.inner.stop()
        self.leading = False

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
            self._task = None
        if self.leading:
            await self._step_down()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.to_thread(_release, connection)
            self.leading = False


def lead_on_postgres(app: FastAPI) -> None:
    """On PostgreSQL the periodic checks and the lessons' clock run in one process of all the
    server's workers and replicas (`LeaderChecks`); on SQLite (one process) they run here."""
    engine = app.state.engine
    if engine.dialect.name != "postgresql" or isinstance(app.state.checks, LeaderChecks):
        return
    app.state.checks = LeaderChecks(app.state.checks, engine, also=[app.state.lesson_ticker])


def _release(connection: Connection) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": CHECKS_LOCK_KEY})
        connection.commit()
    except Exception:  # noqa: BLE001 — never hand a connection that may still hold it back to the pool
        connection.invalidate()
    connection.close()
