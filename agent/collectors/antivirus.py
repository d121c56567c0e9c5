"""The antivirus collector: clamd health, the weekly full scan, media and download scans.

Threads:
* `kalkan-av-schedule` wakes every `tick_s`: checks clamd (emits `av.health`
  when the state changes, and every `health_every_s`), then asks the schedule
  whether the weekly full scan must run (or resume, or catch up) and runs it.
  While clamd is down it probes with a growing pause (1 s, 2 s, … up to `tick_s`)
  instead, and when clamd answers again it hands the parked files to the scanner.
* `kalkan-av-ondemand` scans what the media and download watchers hand it.  While
  clamd is down it does not try: it parks the file (once, bounded) without an event
  or a log line, so a busy download folder costs nothing until clamd is back.
* the mount watcher and the download watcher (see agent/antivirus/).

Its files live in <state dir>/collectors/antivirus/ (checkpoint, last full scan,
quarantine/).  The clamd socket is `/run/clamav/clamd.ctl` (install/clamav/) unless the
environment variable KALKAN_CLAMD_SOCKET names another.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from agent.antivirus import media
from agent.antivirus.checkpoint import Checkpoint, last_completed_at
from agent.antivirus.clamd import DEFAULT_SOCKET, ClamdClient, ClamdError, ClamdUnavailable
from agent.antivirus.downloads import DownloadWatcher
from agent.antivirus.health import CLAMD_MISSING, CLAMD_UNREACHABLE, assess
from agent.antivirus.media import MountWatcher
from agent.antivirus.schedule import ScanDecision, decide, lesson_running
from agent.antivirus.service import AntivirusService, ScanTuning
from agent.antivirus.waiting import Backoff, ParkedScans
from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.state import StatePaths
from policy_server.protocol import AvHealth, AvScanKind, CollectorHealth, PolicyBundle

SOCKET_ENV = "KALKAN_CLAMD_SOCKET"


def nobody_logged_in() -> bool:
    try:
        import psutil

        return not psutil.users()
    except Exception:  # noqa: BLE001 - no utmp: be conservative, the machine is in use
        return False


class AntivirusCollector(Collector):
    name = "antivirus"

    def __init__(self, ctx: CollectorContext, *, clamd_socket: str | Path | None = None,
                 tick_s: float = 30.0, health_every_s: float = 6 * 3600.0,
                 tuning: ScanTuning = ScanTuning(),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 nobody_at_console: Callable[[], bool] = nobody_logged_in,
                 mounts_file: str = "/proc/self/mounts", media_poll_s: float = 2.0,
                 first_retry_s: float = 1.0, max_parked: int = 10_000) -> None:
        super().__init__(ctx)
        socket_path = clamd_socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
        self.client = ClamdClient(socket_path)
        self.folder = StatePaths(Path(ctx.state_dir)).collector_dir(self.name)
        self.service = AntivirusService(self.client, self.folder, ctx.emit, tuning=tuning,
                                        mounts_file=mounts_file)
        self.tick_s = tick_s
        self.health_every_s = health_every_s
        self.clock = clock
        self.nobody_at_console = nobody_at_console
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._jobs: queue.Queue[tuple[AvScanKind, str] | None] = queue.Queue()
        self._pending: set[tuple[AvScanKind, str]] = set()
        self._pending_lock = threading.Lock()
        self._last_health: AvHealth | None = None
        self._last_health_sent: datetime | None = None
        # set while clamd does not answer (by the health check, or by a scan that could not connect)
        self.clamd_down = threading.Event()
        self.retry = Backoff(first_s=min(first_retry_s, tick_s), max_s=tick_s)
        self.parked: ParkedScans[tuple[AvScanKind, str]] = ParkedScans(max_parked)
        self.last_decision: ScanDecision | None = None
        self.scanning = threading.Event()
        self.media_watcher = MountWatcher(lambda point: self.request_scan(AvScanKind.media, point),
                                          mounts_file=mounts_file, interval_s=media_poll_s)
        self.download_watcher = DownloadWatcher(ctx.policy.antivirus.download_dirs,
                                                lambda path: self.request_scan(AvScanKind.download, path),
                                                ignore=[ctx.state_dir])

    # -- plug-in interface

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        loops = ((self._schedule_loop, "kalkan-av-schedule"), (self._ondemand_loop, "kalkan-av-ondemand"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.ctx.policy.antivirus.scan_media:
            media.subscribe(self.media_watcher.wake)
            self.media_watcher.start()
        self.download_watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        media.unsubscribe(self.media_watcher.wake)
        self.media_watcher.stop()
        self.download_watcher.stop()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(30)
        self._threads = []

    def health(self) -> CollectorHealth:
        last = self._last_health
        if last is None:
            return healthy("starting")
        if last.problem in (CLAMD_MISSING, CLAMD_UNREACHABLE):
            return unhealthy(f"antivirus not working: {last.problem}", failed=True)
        if last.problem:
            return unhealthy(f"antivirus: {last.problem} (signatures {last.signature_version})")
        detail = f"signatures {last.signature_version}"
        if self.scanning.is_set():
            detail += ", full scan running"
        if crowded := self.download_watcher.top_level_only:
            # not a fault: new files there are still scanned; those in subfolders wait for the weekly scan
            detail += (f", {', '.join(crowded)}: more than {self.download_watcher.max_subfolders} subfolders,"
                       " new files in subfolders wait for the full scan")
        return healthy(detail)

    def on_policy(self, bundle: PolicyBundle) -> None:
        super().on_policy(bundle)
        self.download_watcher.set_patterns(bundle.antivirus.download_dirs)
        self._wake.set()  # re-decide with the new schedule at once

    # -- work requests

    def request_scan(self, kind: AvScanKind, path: str) -> None:
        with self._pending_lock:
            if (kind, path) in self._pending:
                return
            self._pending.add((kind, path))
        self._jobs.put((kind, path))

    def check_health(self) -> AvHealth:
        now = self.clock()
        try:
            version = self.client.version()
        except ClamdError:
            version = None
        current = assess(version, now=now, max_age_days=self.ctx.policy.antivirus.signature_max_age_days,
                         socket_exists=self.client.socket_path.exists())
        previous = self._last_health
        changed = previous is None or previous.problem != current.problem \
            or previous.signature_version != current.signature_version
        overdue = self._last_health_sent is None \
            or (now - self._last_health_sent).total_seconds() >= self.health_every_s
        self._last_health = current
        if current.clamd_reachable:
            self.clamd_down.clear()
        else:
            self.clamd_down.set()
        if changed or overdue:
            self.ctx.emit("av.health", current)
            self._last_health_sent = now
            if current.problem and changed:  # once per state change, not every health_every_s
                self.ctx.log.warning("antivirus health problem: %s%s", current.problem,
                                     "; files to scan wait until clamd answers"
                                     if not current.clamd_reachable else "")
            elif previous is not None and previous.problem and not current.problem:
                self.ctx.log.info("antivirus healthy again (signatures %s)", current.signature_version)
        return current

    def machine_idle(self, now: datetime) -> bool:
        return self.nobody_at_console() and not lesson_running(self.ctx.policy, self.ctx.room, now)

    def tick(self) -> ScanDecision | None:
        """One round of the schedule thread (public so tests can drive it)."""
        current = self.check_health()
        if not current.clamd_reachable:
            return None
        now = self.clock()
        section = self.ctx.policy.antivirus
        decision = decide(now, section, last_completed=last_completed_at(self.folder),
                          idle=self.machine_idle(now), tz=self.ctx.policy.filtering.timezone)
        self.last_decision = decision
        if decision.run:
            self.scanning.set()
            try:
                self.service.full_scan(section, catch_up=decision.catch_up, should_stop=self._should_pause)
            except ClamdError as exc:
                self.ctx.log.error("full scan interrupted, will resume from its checkpoint: %s", exc)
            finally:
                self.scanning.clear()
        return decision

    def _should_pause(self) -> bool:
        # a lesson starting in the room pauses the scan; it resumes from the checkpoint later
        return self._stop.is_set() or lesson_running(self.ctx.policy, self.ctx.room, self.clock())

    def has_checkpoint(self) -> bool:
        return Checkpoint.load(self.folder) is not None

    # -- threads

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive; the log says why
                self.ctx.log.exception("antivirus schedule round failed")
            if self.clamd_down.is_set():
                pause = self.retry.next_pause()
            else:
                self.retry.reset()
                self.release_parked()
                pause = self.tick_s
            self._wake.wait(pause)
            self._wake.clear()

    def release_parked(self) -> int:
        """clamd answers again: queue what arrived while it was down (logged once)."""
        jobs, dropped = self.parked.release()
        if jobs:
            lost = f" ({dropped} older ones were not kept)" if dropped else ""
            self.ctx.log.info("clamd answers again: scanning %d file(s) and media that arrived while it was "
                              "down%s", len(jobs), lost)
        for kind, path in jobs:
            self.request_scan(kind, path)
        return len(jobs)

    def _ondemand_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            kind, path = job
            with self._pending_lock:
                self._pending.discard(job)
            if not os.path.exists(path):
                continue
            if self.clamd_down.is_set():
                self.parked.park(job)  # no connection attempt, no event, no log line per file
                continue
            try:
                self.service.scan_paths([path], kind)
            except ClamdUnavailable:
                # clamd went away since the last health check: park it and let the schedule
                # thread notice (it logs the state change once and probes with a growing pause)
                self.parked.park(job)
                self.clamd_down.set()
                self._wake.set()
            except ClamdError as exc:
                self.ctx.log.error("could not scan %s (%s): %s", path, kind.value, exc)
            except Exception:  # noqa: BLE001
                self.ctx.log.exception("on-demand scan of %s failed", path)
