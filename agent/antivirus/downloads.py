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

A folder is watched with its subfolders only while it has at most `MAX_SUBFOLDERS` of them:
inotify needs one watch per folder, added by the agent (root) when the folder appears, so a
student could otherwise make a million folders in /tmp and have the agent spend root's inotify
watches, kernel memory and its own memory on them (and a /tmp grown large made the agent's
start take many seconds).  A larger folder is watched at its top level only (new files there are
still scanned at once); the weekly full scan covers the rest.  New folders are counted as they
appear, so a tree growing past the limit is noticed within seconds, not at the next minute.
The first look at the folders happens on the watcher's own thread: `start()` returns at once.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

# More subfolders than this and a folder is watched at its top level only (see above).
MAX_SUBFOLDERS = 1000
# This many new folders since the last count wake the watcher to count again (at most every
# RECOUNT_GAP_S, so that a script making folders in a loop cannot keep the agent counting).
NEW_FOLDERS_BEFORE_RECOUNT = 100
RECOUNT_GAP_S = 2.0

TEMPORARY_SUFFIXES = (".part", ".crdownload", ".download", ".partial", ".tmp", ".kalkan-restore")


def expand_folders(patterns: Iterable[str]) -> list[str]:
    folders: set[str] = set()
    for pattern in patterns:
        folders.update(p for p in glob.glob(pattern) if Path(p).is_dir())
    return sorted(folders)


def count_subfolders(folder: str, *, limit: int) -> int:
    """The folders below `folder` (symlinks not followed), counting no further than `limit` + 1:
    the answer only has to say whether there are more than `limit`."""
    count, pending = 0, [folder]
    while pending and count <= limit:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        count += 1
                        pending.append(entry.path)
        except OSError:  # gone or unreadable meanwhile: it is not ours to watch then
            continue
    return count


def is_temporary(path: str) -> bool:
    parts = Path(path).parts
    name = parts[-1] if parts else ""
    # clamd unpacks archives into /tmp/clamav-<hash>.tmp/: scanning those would feed itself
    if any(part.startswith("clamav-") for part in parts[:-1]):
        return True
    return name.endswith(TEMPORARY_SUFFIXES) or name.startswith(".~")


# the only events the watcher acts on; passed to inotify as its mask.  With subfolders a new
# folder is counted too (inotify reports it anyway: watchdog needs it to watch the new folder).
WANTED_EVENTS = [FileClosedEvent, FileMovedEvent]
WANTED_EVENTS_WITH_SUBFOLDERS = [*WANTED_EVENTS, DirCreatedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, on_file: Callable[[str], None], ignore: tuple[str, ...] = (),
                 on_new_folder: Callable[[], None] = lambda: None) -> None:
        self.on_file = on_file
        self.ignore = ignore
        self.on_new_folder = on_new_folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if isinstance(event, DirCreatedEvent):
                self.on_new_folder()
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
                 rescan_folders_s: float = 60.0, ignore: Iterable[str | Path] = (),
                 max_subfolders: int = MAX_SUBFOLDERS) -> None:
        self.patterns = list(patterns)
        self.on_file = on_file
        self.rescan_folders_s = rescan_folders_s
        self.max_subfolders = max_subfolders
        self._observer = Observer()
        # folders whose files are never scans (the agent's own state); compared as "folder/" prefixes
        self._handler = _Handler(on_file, tuple(str(Path(f)).rstrip("/") + "/" for f in ignore),
                                 on_new_folder=self._new_folder)
        # folder -> (watchdog's watch, whether its subfolders are watched too)
        self._watched: dict[str, tuple[object, bool]] = {}
        self._new_folders = 0
        self._last_refresh = 0.0
        self._stop = threading.Event()
        self._recount = threading.Event()
        self.watching = threading.Event()  # set once the folders have been looked at the first time
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def folders(self) -> list[str]:
        return sorted(self._watched)

    @property
    def top_level_only(self) -> list[str]:
        """Folders with too many subfolders, watched without them (said in the collector's health)."""
        return sorted(f for f, (_, recursive) in self._watched.items() if not recursive)

    def refresh(self) -> None:
        with self._lock:
            self._new_folders = 0
            self._last_refresh = time.monotonic()
            for folder in expand_folders(self.patterns):
                few = count_subfolders(folder, limit=self.max_subfolders) <= self.max_subfolders
                self._watch(folder, recursive=few)
            for folder in [f for f in self._watched if not Path(f).is_dir()]:
                self._unwatch(folder)

    def _watch(self, folder: str, *, recursive: bool) -> None:
        current = self._watched.get(folder)
        if current is not None and current[1] == recursive:
            return
        if current is not None:
            self._unwatch(folder)
        try:
            watch = self._observer.schedule(
                self._handler, folder, recursive=recursive,
                event_filter=WANTED_EVENTS_WITH_SUBFOLDERS if recursive else WANTED_EVENTS)
        except OSError:  # gone meanwhile, or no inotify watch left: the next round tries again
            return
        self._watched[folder] = (watch, recursive)

    def _unwatch(self, folder: str) -> None:
        try:
            self._observer.unschedule(self._watched.pop(folder)[0])
        except (KeyError, ValueError):
            pass

    def _new_folder(self) -> None:
        # inotify's thread: only count, and wake the watcher's own thread to count the trees again
        self._new_folders += 1
        if self._new_folders >= NEW_FOLDERS_BEFORE_RECOUNT:
            self._recount.set()

    def set_patterns(self, patterns: Iterable[str]) -> None:
        self.patterns = list(patterns)
        if self._thread is not None:
            self._recount.set()  # the watcher's thread looks at once (a policy must not wait on a walk)
        else:
            self.refresh()

    def start(self) -> None:
        self._observer.start()
        self._thread = threading.Thread(target=self._loop, name="kalkan-av-downloads", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self.watching.set()
            self._recount.wait(self.rescan_folders_s)
            self._recount.clear()
            # a script making folders in a loop wakes the watcher at most every RECOUNT_GAP_S
            self._stop.wait(max(0.0, self._last_refresh + RECOUNT_GAP_S - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._recount.set()
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(5)
