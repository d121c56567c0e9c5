"""What the antivirus does while clamd is down: wait with a growing pause, and park work.

Without this, every new file in a download folder meant one failed connection, one
orphaned `av.scan.started` event and one ERROR line: on a busy /tmp that was a third
of a CPU core and a log full of the same message (benchmarks/agent/RESULTS.md).

* `Backoff`      - the pause before the next clamd probe: 1 s, 2 s, 4 s … up to a cap.
* `ParkedScans`  - files and media that arrived while clamd was down, in arrival order,
                   each once, bounded; they are scanned when clamd answers again.
Both are plain data (no threads, no I/O), so the tests drive them directly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

Job = TypeVar("Job")


class Backoff:
    """Doubling pauses between `first_s` and `max_s`; `reset()` when clamd answers."""

    def __init__(self, *, first_s: float = 1.0, max_s: float = 30.0) -> None:
        if first_s <= 0 or max_s < first_s:
            raise ValueError(f"backoff needs 0 < first_s <= max_s (got {first_s}, {max_s})")
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next_pause(self) -> float:
        pause = self._next
        self._next = min(self._next * 2, self.max_s)
        return pause

    def reset(self) -> None:
        self._next = self.first_s


class ParkedScans(Generic[Job]):
    """Work waiting for clamd: each job once, oldest first, at most `limit` (oldest dropped).

    Thread-safe: the on-demand thread parks, the schedule thread releases.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._jobs: OrderedDict[Job, None] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped = 0  # jobs pushed out by newer ones since the last release

    def park(self, job: Job) -> None:
        with self._lock:
            self._jobs[job] = None
            self._jobs.move_to_end(job)
            while len(self._jobs) > self.limit:
                self._jobs.popitem(last=False)
                self.dropped += 1

    def release(self) -> tuple[list[Job], int]:
        """Take every parked job (oldest first) and how many were dropped for lack of room."""
        with self._lock:
            jobs, dropped = list(self._jobs), self.dropped
            self._jobs.clear()
            self.dropped = 0
            return jobs, dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
