"""The policy push hub: tells every connected agent (SSE) that a new policy version exists.

Each SSE connection gets an asyncio queue; `broadcast` puts the `PolicyPush` into all of
them, so one change reaches a thousand agents in one pass of the event loop.  Two things
feed the hub:

* `amend_policy` in this process: after its transaction commits, the session's
  `after_commit` hook calls `notify_committed_versions`, which hands the new version to
  every running hub (thread-safe: service code runs in the threadpool);
* a poll of the newest `PolicyVersion` every `POLL_S` seconds, which catches changes made by
  another process (`kalkan-server` commands, a second server worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import PolicyVersion

log = logging.getLogger("kalkan.push")

POLL_S = 2.0
QUEUE_SIZE = 8  # a slow client only ever needs the newest version

_hubs: weakref.WeakSet[PushHub] = weakref.WeakSet()
_hubs_lock = threading.Lock()
_PENDING_KEY = "kalkan_policy_pushes"


class PushHub:
    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[protocol.PolicyPush]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task | None = None
        self.latest: protocol.PolicyPush | None = None

    # --- lifecycle (called from the app's lifespan)

    async def start(self, sessionmaker) -> None:
        self._loop = asyncio.get_running_loop()
        self._sessionmaker = sessionmaker
        self.latest = await asyncio.to_thread(self._read_latest)
        self._poller = asyncio.create_task(self._poll())
        with _hubs_lock:
            _hubs.add(self)

    async def stop(self) -> None:
        with _hubs_lock:
            _hubs.discard(self)
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    def _read_latest(self) -> protocol.PolicyPush | None:
        with self._sessionmaker() as db:
            row = db.execute(
                select(PolicyVersion.version, PolicyVersion.content_hash)
                .order_by(PolicyVersion.version.desc()).limit(1)
            ).first()
        return protocol.PolicyPush(version=row[0], content_hash=row[1]) if row else None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                latest = await asyncio.to_thread(self._read_latest)
            except Exception:  # the database may be briefly unavailable; try again next time
                log.exception("policy poll failed")
                continue
            if latest is not None:
                self.broadcast(latest)

    # --- clients

    def subscribe(self) -> asyncio.Queue[protocol.PolicyPush]:
        queue: asyncio.Queue[protocol.PolicyPush] = asyncio.Queue(QUEUE_SIZE)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._clients.discard(queue)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def broadcast(self, push: protocol.PolicyPush) -> None:
        """Send `push` to every client if it is newer than what they were last told (loop thread)."""
        if self.latest is not None and push.version <= self.latest.version:
            return
        self.latest = push
        for queue in list(self._clients):
            if queue.full():  # the client is behind: drop what it has not read, keep the newest
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(push)

    def notify_threadsafe(self, push: protocol.PolicyPush) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.broadcast, push)


def schedule_push(db: Session, push: protocol.PolicyPush) -> None:
    """Remember a new version on the session; it is pushed once the transaction commits."""
    db.info.setdefault(_PENDING_KEY, []).append(push)


@event.listens_for(Session, "after_commit")
def notify_committed_versions(session: Session) -> None:
    pushes = session.info.pop(_PENDING_KEY, None)
    if not pushes:
        return
    with _hubs_lock:
        hubs = list(_hubs)
    for hub in hubs:
        for push in pushes:
            hub.notify_threadsafe(push)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
