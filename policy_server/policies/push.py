"""The policy push hub: tells every connected agent (SSE) that a new policy version exists.

Each SSE connection gets an asyncio queue; `broadcast` puts the `PolicyPush` into all of
them, so one change reaches a thousand agents in one pass of the event loop.  Two things
feed the hub:

* `amend_policy` in this process: after its transaction commits, the session's
  `after_commit` hook calls `notify_committed_versions`, which hands the new version to
  every running hub (thread-safe: service code runs in the threadpool);
* on PostgreSQL, `LISTEN kalkan_policy`: `schedule_push` also sends `NOTIFY` inside the
  amending transaction (delivered only if it commits), so changes made by another process
  (a second server worker, `kalkan-server` commands) arrive at once;
* a poll of the newest `PolicyVersion` every `POLL_S` seconds (`KALKAN_PUSH_POLL_S`), the
  fallback for SQLite and for a lost LISTEN connection.

Each stream belongs to one agent.  Revoking it (`revoke-agent`) closes its open streams at
once, by the same three paths: `schedule_revocation` (after commit, this process's hubs),
`NOTIFY kalkan_revoked` (every PostgreSQL worker), and the poll, which also looks for
revoked tokens among the connected agents (SQLite, another process).  `close_all` ends
every stream first thing on shutdown, so the server need not wait out its graceful timeout.

The same streams carry one more kind of message: ``event: reports`` (`REPORTS`), sent only to
the agents whose students' reports or unblock requests were just decided (`schedule_reports_push`
in `filtering.queue.decide`; after commit in this process, `NOTIFY kalkan_reports` for the other
PostgreSQL workers).  The agent then reads its report status at once, so the student's report
page says "rejected" / "blocked" / "allowed" within a second or two of the decision instead of
at the agent's next 30 s poll (a rejection changes no policy).  Agents that do not know the
message ignore it (it is not a `PolicyPush`).

And ``event: upgrade`` (`UPGRADE`), to every agent of the school, when a rollout starts
(`schedule_upgrade_push` in `upgrades.service.start_rollout`): each agent then asks
`GET /api/v1/upgrade` after a random wait of up to its jitter, instead of at its next slow poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import PolicyVersion
from policy_server.health.service import short_error

log = logging.getLogger("kalkan.push")

POLL_S = float(os.environ.get("KALKAN_PUSH_POLL_S", "2.0"))
CHANNEL = "kalkan_policy"
REVOKED_CHANNEL = "kalkan_revoked"
CLOSE = object()  # put in a stream's queue: the stream ends
REPORTS = object()  # put in a stream's queue: "your reports were decided, read their status"
REPORTS_CHANNEL = "kalkan_reports"
UPGRADE = object()  # put in a stream's queue: "a rollout started, ask whether it is your turn"
UPGRADE_CHANNEL = "kalkan_upgrade"
LISTEN_RETRY_S = 5.0
QUEUE_SIZE = 8  # a slow client only ever needs the newest version

_hubs: weakref.WeakSet[PushHub] = weakref.WeakSet()
_hubs_lock = threading.Lock()
_PENDING_KEY = "kalkan_policy_pushes"
_REVOKED_KEY = "kalkan_revoked_agents"
_REPORTS_KEY = "kalkan_reports_agents"
_UPGRADE_KEY = "kalkan_upgrade_started"


class PushHub:
    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[protocol.PolicyPush]] = set()
        self._agent_of: dict[asyncio.Queue, str | None] = {}
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None
        self.listening = False  # True while a LISTEN connection is up (PostgreSQL)
        self.latest: protocol.PolicyPush | None = None
        self.database: str | None = None  # the database this hub tells about (`_database_of`)

    # --- lifecycle (called from the app's lifespan)

    async def start(self, sessionmaker) -> None:
        self._loop = asyncio.get_running_loop()
        self._sessionmaker = sessionmaker
        try:
            self.latest = await asyncio.to_thread(self._read_latest)
        except Exception as exc:  # noqa: BLE001 — start anyway (answering 503) and let the poll catch up
            log.warning("policy hub: the database is not available at start (%s); the poll retries",
                        short_error(exc))
        self._poller = asyncio.create_task(self._poll())
        engine = sessionmaker.kw.get("bind")
        self.database = _database_of(engine)
        if engine is not None and engine.dialect.name == "postgresql":
            self._listener = asyncio.create_task(self._listen(engine.url))
        with _hubs_lock:
            _hubs.add(self)

    async def stop(self) -> None:
        with _hubs_lock:
            _hubs.discard(self)
        for task in (self._poller, self._listener):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # The polls are reads: on SQLite a deferred transaction (no write lock), so every 2 s they
    # neither wait for nor hold up the batches being stored.
    def _read_latest(self) -> protocol.PolicyPush | None:
        with self._sessionmaker() as db:
            db.connection(execution_options={"kalkan_read_only": True})
            row = db.execute(
                select(PolicyVersion.version, PolicyVersion.content_hash)
                .order_by(PolicyVersion.version.desc()).limit(1)
            ).first()
        return protocol.PolicyPush(version=row[0], content_hash=row[1]) if row else None

    def _read_revoked(self, agent_ids: list[str]) -> list[str]:
        from policy_server.db.models import Workstation

        with self._sessionmaker() as db:
            db.connection(execution_options={"kalkan_read_only": True})
            return list(db.scalars(select(Workstation.id).where(Workstation.id.in_(agent_ids),
                                                                Workstation.token_revoked.is_(True))))

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(POLL_S)
            try:
                latest = await asyncio.to_thread(self._read_latest)
                connected = sorted({a for a in self._agent_of.values() if a})
                revoked = await asyncio.to_thread(self._read_revoked, connected) if connected else []
            except Exception as exc:  # the database may be briefly unavailable; try again next time
                if not failing:  # one line when it starts failing, not a traceback every poll
                    log.warning("policy poll failed (%s); retrying every %.0f s", short_error(exc), POLL_S)
                failing = True
                continue
            if failing:
                log.info("policy poll works again")
                failing = False
            if latest is not None:
                self.broadcast(latest)
            for agent_id in revoked:
                self.close_agent(agent_id)

    async def _listen(self, url) -> None:
        """Broadcast every `NOTIFY kalkan_policy` (PostgreSQL); reconnect when the link drops."""
        import psycopg

        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        listen_failing = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {REVOKED_CHANNEL}")
                    await conn.execute(f"LISTEN {REPORTS_CHANNEL}")
                    await conn.execute(f"LISTEN {UPGRADE_CHANNEL}")
                    self.listening = True
                    # A change committed while we were not listening: the poll's read, now.
                    latest = await asyncio.to_thread(self._read_latest)
                    if latest is not None:
                        self.broadcast(latest)
                    async for note in conn.notifies():
                        if note.channel == REVOKED_CHANNEL:
                            self.close_agent(note.payload)
                        elif note.channel == REPORTS_CHANNEL:
                            self.tell_reports(note.payload.split(","))
                        elif note.channel == UPGRADE_CHANNEL:
                            self.tell_upgrade()
                        else:
                            self.broadcast(protocol.PolicyPush.model_validate_json(note.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — the poll covers the gap; listen again shortly
                if self.listening or not listen_failing:  # one line per outage, not one per retry
                    log.warning("policy LISTEN connection failed (%s); retrying every %.0f s",
                                short_error(exc), LISTEN_RETRY_S)
                listen_failing = True
            else:
                listen_failing = False
            finally:
                self.listening = False
            await asyncio.sleep(LISTEN_RETRY_S)

    # --- clients

    def subscribe(self, agent_id: str | None = None) -> asyncio.Queue[protocol.PolicyPush]:
        """A queue of pushes for one stream; `CLOSE` in it means: end the stream."""
        queue: asyncio.Queue[protocol.PolicyPush] = asyncio.Queue(QUEUE_SIZE)
        self._clients.add(queue)
        self._agent_of[queue] = agent_id
        if self.closing:
            _put_newest(queue, CLOSE)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._clients.discard(queue)
        self._agent_of.pop(queue, None)

    def close_agent(self, agent_id: str) -> int:
        """End the open streams of this agent (revoked); returns how many (loop thread)."""
        queues = [q for q, a in list(self._agent_of.items()) if a == agent_id]
        for queue in queues:
            _put_newest(queue, CLOSE)
        if queues:
            log.info("closed %d push stream(s) of revoked agent %s", len(queues), agent_id)
        return len(queues)

    def tell_reports(self, agent_ids) -> int:
        """Tell these agents' open streams that their reports were decided (loop thread)."""
        wanted = set(agent_ids)
        queues = [q for q, a in list(self._agent_of.items()) if a in wanted]
        for queue in queues:
            _put_newest(queue, REPORTS)
        return len(queues)

    def tell_upgrade(self) -> int:
        """Tell every open stream that a rollout started (loop thread)."""
        queues = list(self._clients)
        for queue in queues:
            _put_newest(queue, UPGRADE)
        return len(queues)

    def tell_upgrade_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.tell_upgrade)

    def tell_reports_threadsafe(self, agent_ids: list[str]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.tell_reports, agent_ids)

    def close_all(self) -> None:
        """End every stream (shutdown): each answer finishes, so the server stops at once."""
        self.closing = True
        for queue in list(self._clients):
            _put_newest(queue, CLOSE)

    def close_agent_threadsafe(self, agent_id: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.close_agent, agent_id)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def broadcast(self, push: protocol.PolicyPush) -> None:
        """Send `push` to every client if it is newer than what they were last told (loop thread)."""
        if self.latest is not None and push.version <= self.latest.version:
            return
        self.latest = push
        for queue in list(self._clients):
            _put_newest(queue, push)

    def notify_threadsafe(self, push: protocol.PolicyPush) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.broadcast, push)


def _database_of(bind) -> str | None:
    """Which database an engine (or a connection) is on, as the hubs tell them apart; None when
    unknown (then every hub is told, as before)."""
    engine = getattr(bind, "engine", None)
    url = getattr(engine, "url", None)
    return url.render_as_string(hide_password=True) if url is not None else None


def _put_newest(queue: asyncio.Queue, item) -> None:
    if queue.full():  # the client is behind: drop what it has not read, keep the newest
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)


def schedule_revocation(db: Session, agent_id: str) -> None:
    """Close the agent's open push streams once the transaction commits: this process's
    hubs by the `after_commit` hook, every PostgreSQL worker's by NOTIFY."""
    db.info.setdefault(_REVOKED_KEY, []).append(agent_id)
    _notify_other_workers(db, REVOKED_CHANNEL, agent_id)


def schedule_reports_push(db: Session, agent_ids) -> None:
    """After the transaction commits, tell these agents that reports sent from them were decided
    (this process's hubs by the `after_commit` hook; every PostgreSQL worker's by NOTIFY)."""
    ids = sorted({a for a in agent_ids if a})
    if not ids:
        return
    db.info.setdefault(_REPORTS_KEY, set()).update(ids)
    _notify_other_workers(db, REPORTS_CHANNEL, ",".join(ids))


def schedule_upgrade_push(db: Session) -> None:
    """After the transaction commits, tell every agent of the school that a rollout started (this
    process's hubs by the `after_commit` hook; every PostgreSQL worker's by NOTIFY)."""
    db.info[_UPGRADE_KEY] = True
    _notify_other_workers(db, UPGRADE_CHANNEL, "")


def schedule_push(db: Session, push: protocol.PolicyPush) -> None:
    """Remember a new version on the session; it is pushed once the transaction commits.

    On PostgreSQL the NOTIFY goes out with the commit to every listening hub, in every
    process; the `after_commit` hook below still tells this process's hubs directly."""
    db.info.setdefault(_PENDING_KEY, []).append(push)
    _notify_other_workers(db, CHANNEL, push.model_dump_json())


def _notify_other_workers(db: Session, channel: str, payload: str) -> None:
    """PostgreSQL: a NOTIFY in the same transaction, delivered to every listening worker only if
    it commits.  (This process's hubs are told by the `after_commit` hook, on every database.)"""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


@event.listens_for(Session, "after_commit")
def notify_committed_versions(session: Session) -> None:
    pushes = session.info.pop(_PENDING_KEY, None)
    revoked = session.info.pop(_REVOKED_KEY, None)
    reports = session.info.pop(_REPORTS_KEY, None)
    upgrade = session.info.pop(_UPGRADE_KEY, False)
    if not pushes and not revoked and not reports and not upgrade:
        return
    # Only the hubs of the database that committed: a service of many schools runs one hub per
    # school in the same process, and school A's new version told to school B's hub would make B's
    # agents fetch for nothing and B's hub ignore B's own next versions up to A's number.
    database = _database_of(session.get_bind())
    with _hubs_lock:
        hubs = [hub for hub in _hubs if None in (hub.database, database) or hub.database == database]
    for hub in hubs:
        for push in pushes or ():
            hub.notify_threadsafe(push)
        for agent_id in revoked or ():
            hub.close_agent_threadsafe(agent_id)
        if reports:
            hub.tell_reports_threadsafe(sorted(reports))
        if upgrade:
            hub.tell_upgrade_threadsafe()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_REVOKED_KEY, None)
    session.info.pop(_REPORTS_KEY, None)
    session.info.pop(_UPGRADE_KEY, None)
