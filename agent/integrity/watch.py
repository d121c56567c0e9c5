"""Real-time watch of the program folders and the drop places (inotify via watchdog).

inotify says *that* a path changed; `IntegrityEngine.check_path` decides *what*
changed.  A file being written fires many events, so a path is checked when it
was closed after writing, or once it has been quiet for `settle_s`.  Only
write-side events are subscribed (no opens or reads: every program start reads
hundreds of libraries, and those events would cost CPU for nothing).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger("kalkan.agent.integrity")

_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, queue: Callable[[str, bool], None]) -> None:
        self._queue = queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else ""
        if event.is_directory:
            # A folder moved or copied in brings its files with it, without events for them.
            if event.event_type in ("moved", "created"):
                folder = dest or src
                for dirpath, _dirs, files in os.walk(folder):
                    for name in files:
                        self._queue(os.path.join(dirpath, name), False)
            return
        closed = event.event_type == "closed"
        if event.event_type == "moved":
            self._queue(src, True)  # gone from here
            self._queue(dest, True)
        else:
            self._queue(src, closed or event.event_type == "deleted")


class IntegrityWatch:
    """Watches folders and hands each changed path to `check(path)` once it settles."""

    def __init__(
        self, check: Callable[[str], object], folders: Iterable[str], *, settle_s: float = 0.2
    ) -> None:
        self._check = check
        self.folders = [f for f in folders if os.path.isdir(f)]
        self.settle_s = settle_s
        self._pending: dict[str, float] = {}  # path → when it may be checked
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._worker: threading.Thread | None = None
        self.checked = 0
        self.errors = 0
        self.last_error: str | None = None

    def _queue(self, path: str, now: bool) -> None:
        due = time.monotonic() + (0.0 if now else self.settle_s)
        with self._cond:
            # A closed-after-write (now=True) moves the check forward; more writes push it back.
            self._pending[path] = min(due, self._pending.get(path, due)) if now else due
            self._cond.notify()

    def start(self) -> None:
        self._observer = Observer()
        handler = _Handler(self._queue)
        for folder in self.folders:
            try:
                self._observer.schedule(handler, folder, recursive=True, event_filter=_EVENTS)
            except OSError as exc:  # e.g. the inotify watch limit; the periodic checks still run
                self.errors += 1
                self.last_error = f"cannot watch {folder}: {exc}"
                log.warning(self.last_error)
        self._observer.daemon = True
        self._observer.start()
        self._worker = threading.Thread(target=self._run, name="integrity-watch", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                now = time.monotonic()
                due = [p for p, t in self._pending.items() if t <= now]
                for path in due:
                    del self._pending[path]
                if not due:
                    wait = min(self._pending.values(), default=now + 1.0) - now
                    self._cond.wait(max(0.01, min(wait, 1.0)))
                    continue
            for path in due:
                try:
                    self._check(path)
                    self.checked += 1
                except Exception as exc:  # one bad path must not stop the watch
                    self.errors += 1
                    self.last_error = f"{path}: {exc.__class__.__name__}: {exc}"
                    log.exception("integrity watch could not check %s", path)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None
