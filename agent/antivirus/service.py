"""Scans with their events: the weekly full scan (checkpointed) and on-demand scans.

`AntivirusService` is what the collector and the `kalkan-agent av` commands
share.  It emits through a plain `emit(event_type, data)` callable, so it
knows nothing of the outbox.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.antivirus.checkpoint import LAST_COMPLETED, Checkpoint, write_json_atomic
from agent.antivirus.clamd import ClamdClient, ClamdError
from agent.antivirus.engine import EngineResult, Finding, ScanEngine, ScanTotals
from agent.antivirus.priority import lower_thread_priority
from agent.antivirus.quarantine import Quarantine
from agent.antivirus.walker import pseudo_filesystem_mounts, walk
from policy_server.protocol import (
    AntivirusSection,
    AvScanCompleted,
    AvScanKind,
    AvScanProgress,
    AvScanStarted,
    AvThreat,
)

Emit = Callable[[str, Any], Any]
SIGNATURE_DIR = "/var/lib/clamav"
log = logging.getLogger("kalkan.agent.antivirus")


@dataclass(frozen=True)
class ScanTuning:
    sessions: int = 2  # parallel zIDSESSION connections
    window: int = 24  # requests in flight per session (below clamd's MaxQueue)
    checkpoint_every_s: float = 5.0
    progress_every_s: float = 60.0
    low_priority: bool = True


class AntivirusService:
    def __init__(self, client: ClamdClient, state_folder: Path, emit: Emit, *,
                 quarantine: Quarantine | None = None, tuning: ScanTuning = ScanTuning(),
                 mounts_file: str = "/proc/self/mounts") -> None:
        self.client = client
        self.state_folder = Path(state_folder)
        self.emit = emit
        self.quarantine = quarantine or Quarantine(self.state_folder / "quarantine")
        self.tuning = tuning
        self.mounts_file = mounts_file

    # -- helpers

    def _engine(self) -> ScanEngine:
        return ScanEngine(self.client, sessions=self.tuning.sessions, window=self.tuning.window)

    def _signature_version(self) -> str | None:
        try:
            return self.client.version().signature_version
        except ClamdError:
            return None

    def _handle_threat(self, finding: Finding, source: AvScanKind, scan_id: str) -> None:
        quarantined, quarantine_id, digest = False, None, None
        try:
            entry = self.quarantine.quarantine(finding.path, signature=finding.signature,
                                               source=source.value, scan_id=scan_id)
            if entry is None:
                log.info("%s matches %s but was restored as a false positive; left in place",
                         finding.path, finding.signature)
                return
            quarantined, quarantine_id, digest = True, entry.id, entry.sha256
        except OSError as exc:
            log.error("could not quarantine %s (%s): reported only", finding.path, exc)
        self.emit("av.threat", AvThreat(path=finding.path, signature=finding.signature, sha256=digest,
                                        source=source, quarantined=quarantined, quarantine_id=quarantine_id))

    def full_scan_excludes(self, section: AntivirusSection) -> list[str]:
        # never the quarantine (it holds the threats), clamd's own signature files,
        # pseudo file systems or network shares
        return sorted(set(section.exclude) | set(pseudo_filesystem_mounts(self.mounts_file))
                      | {str(self.quarantine.folder), SIGNATURE_DIR})

    # -- on-demand scans (media, downloads)

    def scan_paths(self, roots: Iterable[str | Path], kind: AvScanKind) -> ScanTotals:
        """Scan files or folders now; threats are quarantined and reported."""
        roots = [str(root) for root in roots]
        # raises ClamdUnavailable before any event: no "started" without a "completed" while clamd is down
        self.client.ping()
        scan_id = uuid.uuid4().hex
        started = datetime.now(UTC)
        clock = time.monotonic()
        self.emit("av.scan.started", AvScanStarted(scan_id=scan_id, kind=kind, roots=roots))
        result = self._engine().run(
            walk(roots, exclude=[str(self.quarantine.folder)]),
            on_threat=lambda finding: self._handle_threat(finding, kind, scan_id),
        )
        totals = result.totals
        self.emit("av.scan.completed", AvScanCompleted(
            scan_id=scan_id, kind=kind, files=totals.files, bytes=totals.bytes, threats=totals.threats,
            errors=totals.errors, duration_s=round(time.monotonic() - clock, 3),
            signature_version=self._signature_version(), started_at=started,
        ))
        return totals

    # -- the weekly full scan

    def full_scan(self, section: AntivirusSection, *, catch_up: bool = False,
                  should_stop: Callable[[], bool] = lambda: False) -> AvScanCompleted | None:
        """Run (or resume) the full scan; None when stopped early (the checkpoint stays)."""
        if self.tuning.low_priority:
            for problem in lower_thread_priority():
                log.warning("full scan runs at normal priority: %s", problem)
        roots = list(section.scan_paths)
        checkpoint = Checkpoint.load(self.state_folder)
        resumed = checkpoint is not None and checkpoint.roots == roots
        if not resumed:
            checkpoint = Checkpoint(scan_id=uuid.uuid4().hex, started_at=datetime.now(UTC).isoformat(),
                                    roots=roots, exclude=self.full_scan_excludes(section), catch_up=catch_up,
                                    signature_version=self._signature_version())
            checkpoint.save(self.state_folder)
        else:
            checkpoint.interruptions += 1
        self.emit("av.scan.started", AvScanStarted(
            scan_id=checkpoint.scan_id, kind=AvScanKind.full, roots=roots, resumed=resumed,
            catch_up=checkpoint.catch_up))
        clock = time.monotonic()
        base = ScanTotals(checkpoint.files, checkpoint.bytes, checkpoint.threats, checkpoint.errors)
        marks = {"checkpoint": clock, "progress": clock}

        def save(result: EngineResult) -> None:
            checkpoint.files = base.files + result.totals.files
            checkpoint.bytes = base.bytes + result.totals.bytes
            checkpoint.threats = base.threats + result.totals.threats
            checkpoint.errors = base.errors + result.totals.errors
            if result.done_through is not None:
                checkpoint.done_through = [result.done_through[0], list(result.done_through[1])]
            elapsed_before = checkpoint.elapsed_s
            checkpoint.elapsed_s = elapsed_before + (time.monotonic() - clock)
            checkpoint.save(self.state_folder)
            checkpoint.elapsed_s = elapsed_before

        def progress(result: EngineResult) -> None:
            now = time.monotonic()
            if now - marks["checkpoint"] >= self.tuning.checkpoint_every_s:
                marks["checkpoint"] = now
                save(result)
            if now - marks["progress"] >= self.tuning.progress_every_s:
                marks["progress"] = now
                self.emit("av.scan.progress", AvScanProgress(
                    scan_id=checkpoint.scan_id, files=base.files + result.totals.files,
                    bytes=base.bytes + result.totals.bytes, threats=base.threats + result.totals.threats))

        entries = walk(roots, exclude=checkpoint.exclude, resume_after=checkpoint.position())
        result = self._engine().run(
            entries,
            on_threat=lambda finding: self._handle_threat(finding, AvScanKind.full, checkpoint.scan_id),
            on_progress=progress,
            should_stop=should_stop,
        )
        save(result)
        if result.stopped:
            return None
        completed = AvScanCompleted(
            scan_id=checkpoint.scan_id, kind=AvScanKind.full, files=checkpoint.files, bytes=checkpoint.bytes,
            threats=checkpoint.threats, errors=checkpoint.errors,
            duration_s=round(checkpoint.elapsed_s + (time.monotonic() - clock), 3),
            signature_version=self._signature_version() or checkpoint.signature_version,
            started_at=checkpoint.started, resumed=checkpoint.interruptions > 0,
        )
        write_json_atomic(self.state_folder / LAST_COMPLETED, {
            "completed_at": datetime.now(UTC).isoformat(), **completed.model_dump(mode="json")})
        Checkpoint.clear(self.state_folder)
        self.emit("av.scan.completed", completed)
        return completed
