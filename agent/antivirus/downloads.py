"""New files in download folders are scanned as soon as they are complete (watchdog/inotify).

Browsers write a download to a temporary name (`.part`, `.crdownload`) and
rename it when done, so the watcher reacts to a file being closed after
writing and to a rename into the folder; temporary names are ignored.  The
policy's folders may contain globs (`/home/*/Downloads`); they are expanded
again every minute so a new user's folder is picked up.

Only "closed after writing" and "renamed" reach Python: the inotify mask asks the
kernel for nothing else (watchdog's default also delivers every open, read and
attribute change, which on a busy /tmp kept the agent awake).  The agent's own
state folder is ignored, so its status file and outbox never trigger scans.
"""

from __future__ import annotations

import glob
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

TEMPORARY_SUFFIXES = (".part", ".crdownload", ".download", ".partial", ".tmp", ".kalkan-restore")


def expand_folders(patterns: Iterable[str]) -> list[str]:
    folders: set[str] = set()
    for pattern in patterns:
        folders.update(p for p in glob.glob(pattern) if Path(p).is_dir())
    return sorted(folders)


def is_temporary(path: str) -> bool:
    parts = Path(path).parts
    name = parts[-1] if parts else ""
    # clamd unpacks archives into /tmp/clamav-<hash>.tmp/: scanning those would feed itself
    if any(part.startswith("clamav-") for part in parts[:-1]):
        return True
    return name.endswith(TEMPORARY_SUFFIXES) or name.startswith(".~")


# the only events the watcher acts on; passed to inotify as its mask
WANTED_EVENTS = [FileClosedEvent, FileMovedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, on_file: Callable[[str], None], ignore: tuple[str, ...] = ()) -> None:
        self.on_file = on_file
        self.ignore = ignore

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            path = event.dest_path
        elif isinstance(event, FileClosedEvent):
            path = event.src_path
        else:
            return
        path = path.decode() if isinstance(path, bytes) else path
        if not is_temporary(path) and not path.startswith(self.ignore):
            self.on_file(path)


class DownloadWatcher:
    def __init__(self, patterns: Iterable[str], on_file: Callable[[str], None], *,
                 rescan_folders_s: float = 60.0, ignore: Iterable[str | Path] = ()) -> None:
        self.patterns = list(patterns)
        self.on_file = on_file
        self.rescan_folders_s = rescan_folders_s
        self._observer = Observer()
        # folders whose files are never scans (the agent's own state); compared as "folder/" prefixes
        self._handler = _Handler(on_file, tuple(str(Path(f)).rstrip("/") + "/" for f in ignore))
        self._watched: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def folders(self) -> list[str]:
        return sorted(self._watched)

    def refresh(self) -> None:
        with self._lock:
            for folder in expand_folders(self.patterns):
                if folder not in self._watched:
                    self._watched[folder] = self._observer.schedule(self._handler, folder, recursive=True,
                                                                    event_filter=WANTED_EVENTS)
            for folder in [f for f in self._watched if not Path(f).is_dir()]:
                try:
                    self._observer.unschedule(self._watched.pop(folder))
                except (KeyError, ValueError):
                    pass

    def set_patterns(self, patterns: Iterable[str]) -> None:
        self.patterns = list(patterns)
        self.refresh()

    def start(self) -> None:
        self.refresh()
        self._observer.start()
        self._thread = threading.Thread(target=self._loop, name="kalkan-av-downloads", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.rescan_folders_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(5)
