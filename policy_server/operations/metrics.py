"""The server's metrics, in the Prometheus text exposition format (version 0.0.4).

Hand-written on purpose (no dependency): a few counters and histograms updated by the hot
paths (`record_batch`, `record_check`), and gauges read from the app and the database only
when `/metrics` is scraped (`render`).  Thread-safe: ingest runs in the threadpool.

The counters belong to one school: each app keeps its own `Registry` (`app.state.metrics`,
made by `create_app`), the events view and the app's check scheduler count into it, and
`render(app)` reads it.  There is no module-wide registry: in a service of many schools
(policy_server/tenancy) one process holds several apps, and a shared one would show school A
school B's batches and periodic jobs.

With several workers (`kalkan-server run --workers N`) each worker counts its own requests;
a scrape lands on one of them, so the counters carry a `worker` label (its pid) and
Prometheus sums them.  Gauges read from the database are the same whichever worker answers.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict
from datetime import timedelta

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: ingest of one batch is ~1–50 ms on SQLite; the tail matters (a locked database).
INGEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHECK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
ONLINE_AFTER = timedelta(seconds=120)  # heard from within 2 minutes: "online" (lessons/seats.py)
STALE_AFTER = timedelta(minutes=10)  # agents/service.py STALE_AFTER_S: "not seen" after that

class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


class Registry:
    """One app's (one school's) counters; every read and write under its own lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: dict[str, int] = defaultdict(int)  # outcome -> count (accepted|refused_4xx…)
        self.events: dict[str, int] = defaultdict(int)  # accepted|duplicate|rejected -> count
        self.ingest = Histogram(INGEST_BUCKETS)
        self.checks: dict[str, Histogram] = {}
        self.check_failures: dict[str, int] = defaultdict(int)
        self.check_last_end: dict[str, float] = {}
        self.started = time.time()


def record_batch(
    registry: Registry,
    duration_s: float,
    *,
    accepted: int = 0,
    duplicates: int = 0,
    rejected: int = 0,
    status: int = 200,
) -> None:
    """One `POST /api/v1/events` answered by the app owning `registry`: its duration and what
    became of its events."""
    outcome = "stored" if status < 400 else f"refused_{status}"
    with registry.lock:
        registry.batches[outcome] += 1
        registry.ingest.observe(duration_s)
        registry.events["accepted"] += accepted
        registry.events["duplicate"] += duplicates
        registry.events["rejected"] += rejected


def record_check(registry: Registry, name: str, duration_s: float, *, ok: bool) -> None:
    """One run of a periodic job of the app owning `registry` (policy_server/checks/scheduler.py)."""
    with registry.lock:
        registry.checks.setdefault(name, Histogram(CHECK_BUCKETS)).observe(duration_s)
        if not ok:
            registry.check_failures[name] += 1
        registry.check_last_end[name] = time.time()


# ----------------------------------------------------------------------------- exposition


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class Exposition:
    """Builds the text: each family once, HELP and TYPE first, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, object], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, series: list[tuple[dict[str, object], Histogram]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, h in series:
            for bound, count in zip(h.buckets, h.counts, strict=True):
                self.lines.append(f"{name}_bucket{_labels({**labels, 'le': _number(float(bound))})} {count}")
            self.lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {h.total}")
            self.lines.append(f"{name}_sum{_labels(labels)} {_number(h.sum)}")
            self.lines.append(f"{name}_count{_labels(labels)} {h.total}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def agents_by_state(db, now) -> dict[str, int]:
    """Enrolled agents by state: online (< 2 min), late (< 10 min), not_seen, revoked."""
    from sqlalchemy import select

    from policy_server.db.models import Workstation

    counts = {"online": 0, "late": 0, "not_seen": 0, "revoked": 0}
    for revoked, last_seen in db.execute(select(Workstation.token_revoked, Workstation.last_seen_at)):
        if revoked:
            counts["revoked"] += 1
        elif last_seen is not None and now - last_seen < ONLINE_AFTER:
            counts["online"] += 1
        elif last_seen is not None and now - last_seen < STALE_AFTER:
            counts["late"] += 1
        else:
            counts["not_seen"] += 1
    return counts


def render(app, db=None) -> str:
    """The whole `/metrics` text for this app: its own counters (`app.state.metrics`) and its
    own database (read with `db`, or a session of its own: call it in a thread)."""
    from policy_server.db.models import utcnow
    from policy_server.operations.backup import cached_backup_state

    worker = {"worker": os.getpid()}
    out = Exposition()
    registry: Registry = app.state.metrics
    with registry.lock:
        batches = dict(registry.batches)
        events = dict(registry.events)
        ingest = _copy(registry.ingest)
        checks = {k: _copy(v) for k, v in registry.checks.items()}
        failures = dict(registry.check_failures)
        last_end = dict(registry.check_last_end)
    out.family(
        "kalkan_server_start_time_seconds",
        "gauge",
        "Unix time this school's counters began (the process's start, or the school's addition).",
        [(worker, registry.started)],
    )
    out.family(
        "kalkan_ingest_batches_total",
        "counter",
        "Event batches posted by agents, by outcome (stored, or refused with an HTTP status).",
        [({**worker, "outcome": k}, v) for k, v in sorted(batches.items())]
        or [({**worker, "outcome": "stored"}, 0)],
    )
    out.family(
        "kalkan_ingest_events_total",
        "counter",
        "Events in stored batches: accepted, duplicate (already stored) or rejected (invalid).",
        [({**worker, "result": k}, events.get(k, 0)) for k in ("accepted", "duplicate", "rejected")],
    )
    out.histogram(
        "kalkan_ingest_batch_duration_seconds", "Time to read, check and store one batch.", [(worker, ingest)]
    )
    out.histogram(
        "kalkan_check_duration_seconds",
        "Duration of one run of a periodic job.",
        [({**worker, "check": k}, v) for k, v in sorted(checks.items())],
    )
    out.family(
        "kalkan_check_failures_total",
        "counter",
        "Runs of a periodic job that failed.",
        [({**worker, "check": k}, failures.get(k, 0)) for k in sorted(checks)],
    )
    out.family(
        "kalkan_check_last_run_timestamp_seconds",
        "gauge",
        "When a periodic job last finished.",
        [({**worker, "check": k}, v) for k, v in sorted(last_end.items())],
    )

    hub = getattr(app.state, "push_hub", None)
    clients = list(getattr(hub, "_clients", ())) if hub is not None else []
    out.family(
        "kalkan_push_connections",
        "gauge",
        "Agents connected to this worker's policy push (SSE).",
        [(worker, len(clients))],
    )
    out.family(
        "kalkan_push_queue_depth",
        "gauge",
        "Policy pushes waiting in this worker's SSE queues (summed over connections).",
        [(worker, sum(q.qsize() for q in clients))],
    )
    out.family(
        "kalkan_push_listening",
        "gauge",
        "1 while the PostgreSQL LISTEN connection is up.",
        [(worker, bool(getattr(hub, "listening", False)))],
    )

    if db is None:
        with app.state.sessionmaker() as own:
            states = agents_by_state(own, utcnow())
    else:
        states = agents_by_state(db, utcnow())
    out.family(
        "kalkan_agents",
        "gauge",
        "Enrolled agents by state (online: heard from < 2 min, late: < 10 min, not_seen, revoked).",
        [({"state": k}, v) for k, v in states.items()],
    )

    backup = cached_backup_state(app.state.settings)
    out.family(
        "kalkan_backup_configured",
        "gauge",
        "1 when scheduled backups are on (KALKAN_BACKUP_DIR).",
        [({}, backup.configured)],
    )
    out.family(
        "kalkan_backup_last_ok",
        "gauge",
        "1 when the newest backup exists and passes `kalkan-server check-backup`.",
        [({}, backup.ok)],
    )
    if backup.made_at is not None:
        out.family(
            "kalkan_backup_last_timestamp_seconds",
            "gauge",
            "When the newest backup was written.",
            [({}, backup.made_at.timestamp())],
        )
        out.family(
            "kalkan_backup_last_size_bytes",
            "gauge",
            "Size of the newest backup.",
            [({}, backup.size_bytes or 0)],
        )
    return out.text()


def _copy(h: Histogram) -> Histogram:
    c = Histogram(h.buckets)
    c.counts, c.total, c.sum = list(h.counts), h.total, h.sum
    return c
