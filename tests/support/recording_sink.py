"""An `EventSink` for collector tests: validates every event against the wire
protocol exactly as the outbox would (`make_event`) and keeps the envelopes."""

from __future__ import annotations

import threading
import time
from typing import Any

from policy_server.protocol import EventEnvelope, Subject, make_event


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[EventEnvelope] = []
        self._cond = threading.Condition()

    def emit(self, event_type: str, data: Any, *, subject: Subject | None = None,
             clauses: list[str] | None = None) -> str:
        envelope = make_event(event_type, data, subject=subject, clauses=clauses)
        with self._cond:
            self.events.append(envelope)
            self._cond.notify_all()
        return str(envelope.id)

    def of_type(self, event_type: str) -> list[EventEnvelope]:
        with self._cond:
            return [e for e in self.events if e.type == event_type]

    def wait_for(self, event_type: str, *, count: int = 1, timeout: float = 10.0) -> list[EventEnvelope]:
        """Block until `count` events of `event_type` arrived; fail the test with what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if e.type == event_type]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} {event_type} event(s) within {timeout} s; got "
                                         f"{[(e.type, e.data) for e in self.events]}")
                self._cond.wait(left)
