"""The scanning engine: feeds files to clamd as fast as clamd can scan them.

Like `clamdscan --multiscan --fdpass`, the agent walks the tree itself, opens
every file and passes the descriptor (FILDES) over pipelined zIDSESSION
connections, so clamd's thread pool is never idle and clamd needs no read
access of its own.  Replies come back in any order; the engine keeps the
walk position up to which *every* file is finished (`done_through`), which is
what a checkpoint stores.
"""

from __future__ import annotations

import os
import selectors
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.antivirus.clamd import ClamdClient, ClamdSession, ScanReply, open_for_scan
from agent.antivirus.walker import Position, WalkEntry


@dataclass
class ScanTotals:
    files: int = 0
    bytes: int = 0
    threats: int = 0
    errors: int = 0

    def add(self, other: ScanTotals) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.threats += other.threats
        self.errors += other.errors


@dataclass(frozen=True)
class Finding:
    path: str
    signature: str
    size: int


@dataclass
class EngineResult:
    totals: ScanTotals = field(default_factory=ScanTotals)
    done_through: Position | None = None
    stopped: bool = False


@dataclass
class _Pending:
    entry: WalkEntry
    done: bool = False
    reply: ScanReply | None = None


class ScanEngine:
    def __init__(self, client: ClamdClient, *, sessions: int = 2, window: int = 24) -> None:
        if sessions < 1 or window < 1:
            raise ValueError("sessions and window must be at least 1")
        self.client = client
        self.sessions = sessions
        self.window = window

    def run(
        self,
        entries: Iterable[WalkEntry],
        *,
        on_threat: Callable[[Finding], None] = lambda finding: None,
        on_progress: Callable[[EngineResult], None] = lambda result: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> EngineResult:
        result = EngineResult()
        sessions = [self.client.session() for _ in range(self.sessions)]
        selector = selectors.DefaultSelector()
        for session in sessions:
            selector.register(session.sock, selectors.EVENT_READ, session)
        order: deque[_Pending] = deque()
        by_request: dict[tuple[int, int], _Pending] = {}

        def finish(pending: _Pending, reply: ScanReply | None) -> None:
            # A threat is handled at once; the totals count a file only when every file
            # before it is finished too, so that they always match `done_through`.
            pending.done = True
            pending.reply = reply
            if reply is not None and reply.signature:
                on_threat(Finding(pending.entry.path, reply.signature, pending.entry.size))
            totals = result.totals
            while order and order[0].done:
                first = order.popleft()
                totals.files += 1
                totals.bytes += first.entry.size
                if first.reply is None or first.reply.error:
                    totals.errors += 1
                elif first.reply.signature:
                    totals.threats += 1
                result.done_through = first.entry.position

        def collect(block: bool) -> None:
            for key, _ in selector.select(timeout=None if block else 0):
                session: ClamdSession = key.data
                for reply in session.read_replies():
                    pending = by_request.pop((id(session), reply.request_id or 0), None)
                    if pending is not None:
                        finish(pending, reply)
            on_progress(result)

        try:
            for entry in entries:
                if should_stop():
                    result.stopped = True
                    break
                session = min(sessions, key=lambda s: s.in_flight)
                while session.in_flight >= self.window:
                    collect(block=True)
                    session = min(sessions, key=lambda s: s.in_flight)
                pending = _Pending(entry)
                order.append(pending)
                try:
                    fd = open_for_scan(entry.path)
                except OSError:
                    finish(pending, None)  # vanished or unreadable: an error, not a threat
                    continue
                try:
                    by_request[(id(session), session.send_fd(fd))] = pending
                finally:
                    os.close(fd)
            while by_request:
                collect(block=True)
        finally:
            selector.close()
            for session in sessions:
                session.close()
        return result
