"""Reload the policy when the agent replaces `policy.json` (atomic rename).

Polling the file's identity (inode, size, mtime) twice a second is simple,
costs nothing and meets the 2-second goal for lessons and bans; inotify would
save a syscall at the price of more moving parts.
"""

from __future__ import annotations

import os
from pathlib import Path

POLL_S = 0.25


class FileWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self) -> bool:
        """True the first time and whenever the file was replaced or rewritten since."""
        identity = self._identity()
        if identity is None or identity == self._seen:
            return False
        self._seen = identity
        return True
