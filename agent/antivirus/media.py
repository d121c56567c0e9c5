"""Removable media: notice a newly mounted medium and hand it to the scanner.

A USB stick is scanned when it is mounted (the desktop mounts it under
/media/<user>/ or /run/media/<user>/).  The USB collector, which decides
whether a storage device may be used at all, calls `announce_storage()` when
it lets one in; the watcher then looks at the mount table at once instead of
waiting for its next poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

REMOVABLE_PREFIXES = ("/media/", "/run/media/", "/mnt/")

_listeners: list[Callable[[str], None]] = []
_lock = threading.Lock()


def subscribe(listener: Callable[[str], None]) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Callable[[str], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def announce_storage(device: str) -> None:
    """An allowed storage device was connected (its sysfs name or path); scan it when mounted."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(device)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def removable_mounts(mounts_text: str, prefixes: Iterable[str] = REMOVABLE_PREFIXES) -> set[str]:
    """Mount points of removable media in a /proc/self/mounts text (pure)."""
    points = set()
    prefixes = tuple(prefixes)
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        if point.startswith(prefixes) or (point + "/") in prefixes:
            points.add(point)
    return points


class MountWatcher:
    """Polls the mount table; calls `on_new_mount(point)` for each newly mounted medium."""

    def __init__(self, on_new_mount: Callable[[str], None], *, mounts_file: str | Path = "/proc/self/mounts",
                 prefixes: Iterable[str] = REMOVABLE_PREFIXES, interval_s: float = 2.0) -> None:
        self.on_new_mount = on_new_mount
        self.mounts_file = Path(mounts_file)
        self.prefixes = tuple(prefixes)
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: set[str] = set()

    def _read(self) -> set[str]:
        try:
            return removable_mounts(self.mounts_file.read_text(), self.prefixes)
        except OSError:
            return set()

    def start(self) -> None:
        # media mounted before the agent started count as new: they have not been scanned by us
        self._known = set()
        self._thread = threading.Thread(target=self._loop, name="kalkan-av-media", daemon=True)
        self._thread.start()

    def wake(self, _device: str = "") -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            current = self._read()
            for point in sorted(current - self._known):
                self.on_new_mount(point)
            self._known = current
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)
