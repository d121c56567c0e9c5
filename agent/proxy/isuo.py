"""ISUO sessions from this seat: who and when, never what (000 §6.8, 002 §4).

A session starts with the first connection of an OS user to an ISUO host and
ends when no connection of that user to it has been open for `idle_end_s`.
The tracker is pure: the addon feeds it connection opens/closes and a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from policy_server.protocol import IsuoSession

IDLE_END_S = 120.0


@dataclass
class _Session:
    host: str
    started: float
    open_connections: int = 0
    last_activity: float = 0.0


@dataclass
class IsuoTracker:
    idle_end_s: float = IDLE_END_S
    _sessions: dict[tuple[str, str], _Session] = field(default_factory=dict)

    def opened(self, user: str, host: str, now: float) -> IsuoSession | None:
        """A connection opened; returns the `start` event when a new session begins."""
        key = (user, host)
        session = self._sessions.get(key)
        started = session is None
        if session is None:
            session = self._sessions[key] = _Session(host=host, started=now)
        session.open_connections += 1
        session.last_activity = now
        if started:
            return IsuoSession(host=host, state="start", started_at=_utc(now))
        return None

    def closed(self, user: str, host: str, now: float) -> None:
        session = self._sessions.get((user, host))
        if session is not None:
            session.open_connections = max(0, session.open_connections - 1)
            session.last_activity = now

    def expire(self, now: float) -> list[tuple[str, IsuoSession]]:
        """`end` events, with their user, of sessions idle for `idle_end_s`."""
        ended = []
        for key, session in list(self._sessions.items()):
            if session.open_connections == 0 and now - session.last_activity >= self.idle_end_s:
                del self._sessions[key]
                ended.append((key[0], IsuoSession(host=session.host, state="end",
                                                  started_at=_utc(session.started),
                                                  ended_at=_utc(session.last_activity))))
        return ended

    def end_all(self, now: float) -> list[tuple[str, IsuoSession]]:
        """The proxy stops: every open session ends now."""
        ended = []
        for (user, _), session in self._sessions.items():
            ended.append((user, IsuoSession(host=session.host, state="end",
                                            started_at=_utc(session.started), ended_at=_utc(now))))
        self._sessions.clear()
        return ended


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
