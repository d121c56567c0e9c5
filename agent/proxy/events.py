"""Events from the mitmdump process to the agent's durable outbox.

The proxy runs in its own process and writes to the same SQLite outbox as the
agent (`agent.outbox` is safe across processes).  Writes go through one
background thread so an fsync never stalls the proxy's event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from policy_server.protocol import Subject

log = logging.getLogger("kalkan.proxy.events")


class BackgroundSink:
    """An `EventSink` that hands events to a writer thread (the outbox's `OutboxSink`)."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._queue: queue.Queue[tuple[str, Any, Subject | None, list[str] | None] | None]
        self._queue = queue.Queue(10000)
        self._thread = threading.Thread(target=self._run, name="kalkan-proxy-events", daemon=True)
        self._thread.start()

    def emit(self, event_type: str, data: Any, *, subject: Subject | None = None,
             clauses: list[str] | None = None) -> str:
        try:
            self._queue.put_nowait((event_type, data, subject, clauses))
        except queue.Full:
            log.error("event queue full; dropping %s", event_type)
        return ""

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event_type, data, subject, clauses = item
            try:
                self._sink.emit(event_type, data, subject=subject, clauses=clauses)
            except Exception:  # one bad event must not stop the writer
                log.exception("could not store %s event", event_type)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is stored (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(("__flush__", done, None, None))  # type: ignore[arg-type]
        done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class _FlushAware:
    """Wraps a sink so the flush marker sets its event instead of being emitted."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def emit(self, event_type: str, data: Any, *, subject: Subject | None = None,
             clauses: list[str] | None = None) -> str:
        if event_type == "__flush__":
            data.set()
            return ""
        return self.sink.emit(event_type, data, subject=subject, clauses=clauses)


def outbox_sink(outbox_path: Path) -> BackgroundSink:
    from agent.outbox import Outbox, OutboxSink

    return BackgroundSink(_FlushAware(OutboxSink(Outbox(outbox_path))))
