"""The lessons' clock on the server: ends lessons on time (summary, bundle) and e-mails
pending notices.  One asyncio task; the work runs in a thread with its own session.

The agents end a lesson at its `ends_at` by themselves (it is in their bundle); this takes
the ended lesson out of the bundle, so nothing of it (ban, lock, allow-list) carries over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from policy_server.lessons.service import finish_due
from policy_server.notices.service import deliver_pending

log = logging.getLogger("kalkan.lessons")


class LessonTicker:
    def __init__(self, sessionmaker, *, interval_s: float = 1.0, mail_interval_s: float = 10.0) -> None:
        self.sessionmaker = sessionmaker
        self.interval_s = interval_s
        self.mail_interval_s = mail_interval_s
        self._task: asyncio.Task | None = None
        self._next_mail = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kalkan-lessons")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # noqa: BLE001 - the clock must keep running
                log.exception("lesson tick failed")
            await asyncio.sleep(self.interval_s)

    def tick(self) -> None:
        with self.sessionmaker() as db:
            if finish_due(db).ended:
                db.commit()
        if time.monotonic() >= self._next_mail:
            self._next_mail = time.monotonic() + self.mail_interval_s
            with self.sessionmaker() as db:
                if deliver_pending(db):
                    db.commit()
                else:
                    db.commit()  # failures are recorded on the notice (email_error)
