"""Allowed traffic only as per-domain counts per period (`web.usage`, 001 §2.15).

No URL, no user, no time finer than the period leaves this module.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

from policy_server.protocol import WebUsage

PERIOD_S = 15 * 60


class UsageCounter:
    def __init__(self, period_s: float = PERIOD_S, *, max_domains: int = 5000) -> None:
        self.period_s = period_s
        self.max_domains = max_domains
        self._counts: Counter[str] = Counter()
        self._started: float | None = None
        self._lock = threading.Lock()

    def count(self, domain: str, now: float) -> None:
        self.count_normal(domain.lower().rstrip("."), now)

    def count_normal(self, domain: str, now: float) -> None:
        """`count` for a domain already in lower case without a trailing dot."""
        with self._lock:
            if self._started is None:
                self._started = now
            if domain in self._counts or len(self._counts) < self.max_domains:
                self._counts[domain] += 1
            else:
                self._counts["(other)"] += 1

    def due(self, now: float) -> bool:
        with self._lock:
            return self._started is not None and now - self._started >= self.period_s

    def flush(self, now: float) -> WebUsage | None:
        """The period's counts as a `web.usage` payload, and start a new period; None if empty."""
        with self._lock:
            if not self._counts or self._started is None:
                self._started = None
                return None
            usage = WebUsage(
                period_start=datetime.fromtimestamp(self._started, UTC),
                period_end=datetime.fromtimestamp(now, UTC),
                counts=dict(self._counts),
            )
            self._counts.clear()
            self._started = None
            return usage
