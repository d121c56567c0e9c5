"""The server's periodic job runner: one asyncio task, the (synchronous) jobs in a thread.

`CheckScheduler` is started and stopped with the app's lifespan (`policy_server.app`).  Each
`Job` has its own interval; the first round runs `first_delay_s` after start (so a server
that restarts in a loop does not hammer the database, and tests that never wait see no
background writes).  A job that fails is logged with its traceback and simply runs again at
its next round: a broken check must never take the server down.  Jobs run one after the
other in one worker thread, each in its own session and transaction, so they never hold the
event loop and never run twice at once.  Each run is counted for `/metrics` in the
scheduler's own `metrics` registry (the app's, `app.state.metrics`: one per school, never a
module-wide one); a scheduler made without one counts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from policy_server.db.models import utcnow

if TYPE_CHECKING:
    from policy_server.operations.metrics import Registry

log = logging.getLogger("kalkan.checks")


@dataclass
class Job:
    name: str
    interval_s: float
    run: Callable[[Session, datetime], object]  # (session, now) -> anything; commits itself
    next_at: float = 0.0  # monotonic time of the next run
    runs: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclass
class CheckScheduler:
    sessions: sessionmaker
    jobs: list[Job]
    first_delay_s: float = 60.0
    metrics: Registry | None = None  # the app's own counters (policy_server/operations/metrics.py)
    _task: asyncio.Task | None = field(default=None, init=False)
    _stop: asyncio.Event | None = field(default=None, init=False)

    async def start(self) -> None:
        if self._task is not None or not self.jobs:
            return
        self._stop = asyncio.Event()
        start = time.monotonic() + self.first_delay_s
        for job in self.jobs:
            job.next_at = start
        self._task = asyncio.create_task(self._loop(), name="kalkan-checks")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        try:
            await self._task  # a job already running in its thread finishes first
        finally:
            self._task = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            due = [job for job in self.jobs if job.next_at <= now]
            for job in due:
                await asyncio.to_thread(self.run_job, job)
                job.next_at = time.monotonic() + job.interval_s
            wait = max(0.0, min(job.next_at for job in self.jobs) - time.monotonic())
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    def run_job(self, job: Job) -> bool:
        """Run one job now (in the calling thread); False when it failed (logged, retried later)."""
        from policy_server.operations.metrics import record_check

        job.runs += 1
        began = time.perf_counter()
        try:
            with self.sessions() as db:
                job.run(db, utcnow())
        except Exception as exc:  # noqa: BLE001 — any failure of a check must not kill the server
            job.failures += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("periodic check %s failed; it runs again in %.0f s", job.name, job.interval_s)
            if self.metrics is not None:
                record_check(self.metrics, job.name, time.perf_counter() - began, ok=False)
            return False
        job.last_error = None
        if self.metrics is not None:
            record_check(self.metrics, job.name, time.perf_counter() - began, ok=True)
        return True


def periodic_check_jobs(*, scan_interval_s: float, isuo_interval_s: float) -> list[Job]:
    """The server's periodic checks as jobs (a non-positive interval leaves a check out)."""
    from policy_server.checks.periodic import run_check

    def job(name: str, interval_s: float) -> Job:
        return Job(name=name, interval_s=interval_s, run=lambda db, now: run_check(db, name, now=now))

    jobs = []
    if scan_interval_s > 0:
        jobs.append(job("av.full_scan_overdue", scan_interval_s))
    if isuo_interval_s > 0:
        jobs += [job("isuo.storage", isuo_interval_s), job("isuo.unlocked", isuo_interval_s),
                 job("isuo.cross", isuo_interval_s)]
    return jobs


def summary_jobs(settings) -> list[Job]:
    """A school server makes last week's summary every Monday (the job runs hourly and makes
    it once) and sends the district what it has not accepted yet; a district server has none."""
    if getattr(settings, "level", "school") != "school" or settings.summaries_interval_s <= 0:
        return []
    from policy_server.summaries.service import weekly_job

    return [Job(name="summaries.weekly", interval_s=settings.summaries_interval_s, run=weekly_job)]
