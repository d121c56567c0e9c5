"""The last 15 minutes of pages per OS user, for the report page (000 §8.3).

Kept in memory only and never written anywhere (minors' privacy, 001 §2.15):
when the proxy restarts, the list starts empty.  Keyed by OS user so the next
person at the seat does not see the previous one's pages.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime

from agent.proxy.pages import RecentPage

WINDOW_S = 15 * 60
MAX_PER_USER = 100


class RecentPages:
    def __init__(self, window_s: float = WINDOW_S, max_per_user: int = MAX_PER_USER) -> None:
        self.window_s = window_s
        self.max_per_user = max_per_user
        self._by_user: dict[str, OrderedDict[str, float]] = {}
        self._lock = threading.Lock()

    def add(self, user: str, url: str, now: float) -> None:
        with self._lock:
            pages = self._by_user.setdefault(user, OrderedDict())
            pages.pop(url, None)
            pages[url] = now  # most recent last
            while len(pages) > self.max_per_user:
                pages.popitem(last=False)

    def recent(self, user: str, now: float) -> list[RecentPage]:
        """Newest first, only those seen within the window."""
        with self._lock:
            pages = self._by_user.get(user)
            if not pages:
                return []
            cutoff = now - self.window_s
            for url in [u for u, seen in pages.items() if seen < cutoff]:
                del pages[url]
            return [
                RecentPage(url=url, seen_at=datetime.fromtimestamp(seen, UTC))
                for url, seen in reversed(pages.items())
            ]
