"""Events from the mitmdump process to the agent.

Two ways, one interface (`emit`), always through one background thread so a slow
write never stalls the proxy's event loop:

* `pipe_sink` (production: the agent's proxy collector spawned this process): one JSON
  line per event on an inherited pipe; the collector stores it in the outbox.
* `outbox_sink` (a proxy started by hand or by a test rig): straight into the SQLite
  outbox (`agent.outbox` is safe across processes).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
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


class PipeWriter:
    """Hands each event, as one JSON line, to the agent through a pipe the agent's proxy
    collector gave this process (`--set kalkan_event_fd=N`).

    Why a pipe and not the outbox file: the proxy runs as its own unprivileged user and
    handles untrusted traffic; with a pipe it needs no write access to anything of the
    agent's (the outbox, the state dir), and the agent stores and validates every event
    itself.  If the agent goes away the pipe breaks and the proxy stops (`on_broken`), so
    no orphan proxy keeps the ports once its supervisor is gone.
    """

    def __init__(self, fd: int, on_broken: Any = None) -> None:
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._on_broken = on_broken
        self._lock = threading.Lock()
        # Notice the agent going away at once, not at the next event (web.usage may be 15 min
        # away): poll() reports POLLERR on a pipe's write end as soon as no reader is left.
        threading.Thread(target=self._watch_reader, name="kalkan-proxy-pipe-watch", daemon=True).start()

    def _watch_reader(self) -> None:
        poller = select.poll()
        poller.register(self._file.fileno(), 0)  # POLLERR and POLLHUP are always reported
        while True:
            for _fd, event in poller.poll():
                if event & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    self._broken()
                    return

    def _broken(self) -> None:
        with self._lock:
            on_broken, self._on_broken = self._on_broken, None
        if on_broken is not None:
            log.error("the agent closed the event pipe; stopping the proxy")
            on_broken()

    def emit(self, event_type: str, data: Any, *, subject: Subject | None = None,
             clauses: list[str] | None = None) -> str:
        if event_type == "__flush__":  # writes are unbuffered: nothing to wait for
            data.set()
            return ""
        body = data.model_dump(mode="json") if hasattr(data, "model_dump") else data
        line = json.dumps({"type": event_type, "data": body,
                           "subject": subject.model_dump(mode="json") if subject else None,
                           "clauses": clauses}, separators=(",", ":")).encode() + b"\n"
        try:
            self._file.write(line)  # the writer thread blocks here if the agent is slow, never the proxy
        except BrokenPipeError:
            self._broken()
            raise
        return ""

    def close(self) -> None:
        with self._lock:
            self._on_broken = None  # closing on purpose is not the agent going away
        try:
            self._file.close()
        except OSError:
            pass


def pipe_sink(fd: int, on_broken: Any = None) -> BackgroundSink:
    return BackgroundSink(PipeWriter(fd, on_broken))


def read_events(stream: Any) -> Any:
    """The agent's side: yield (type, data, subject dict, clauses) per line until EOF.
    A malformed line is logged and skipped (it can only come from a broken proxy)."""
    for raw in stream:
        try:
            message = json.loads(raw)
            yield message["type"], message["data"], message.get("subject"), message.get("clauses")
        except (ValueError, KeyError, TypeError) as exc:
            log.error("bad line on the proxy's event pipe (%s): %r", exc, raw[:200])
