"""Software integrity collector (000 §4.2, §6.5): baseline, periodic checks, real-time watch.

Its own thread does the slow work: the first baseline (if there is none), a fast
check every `integrity.check_interval_minutes`, a full re-hash every
`integrity.full_rehash_hours`, and a check right after a new policy (that is how
accepted changes move the baseline).  The watch thread reports single paths in
real time.  The work itself lives in `agent.integrity.engine`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.integrity.config import IntegrityConfig, IntegrityConfigError
from agent.integrity.engine import IntegrityEngine
from agent.integrity.store import BaselineMissing, BaselineTampered
from agent.integrity.watch import IntegrityWatch
from policy_server.protocol import CollectorHealth, PolicyBundle

# Where the HMAC key and anchor live on a real workstation: apart from the baseline.
SYSTEM_KEY_DIR = Path("/etc/kalkan/integrity")


class IntegrityCollector(Collector):
    name = "integrity"

    def __init__(
        self,
        ctx: CollectorContext,
        *,
        key_dir: Path | None = None,
        workers: int | None = None,
        settle_s: float = 0.2,
    ) -> None:
        super().__init__(ctx)
        if key_dir is None:
            root_on_linux = ctx.platform == "linux" and os.geteuid() == 0
            key_dir = SYSTEM_KEY_DIR if root_on_linux else Path(ctx.state_dir) / "integrity-key"
        self.config = IntegrityConfig.from_section(ctx.policy.integrity)
        self.engine = IntegrityEngine(
            self.config,
            state_dir=Path(ctx.state_dir) / "integrity",
            key_dir=key_dir,
            emit=self._emit,
            workers=workers,
        )
        self.settle_s = settle_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: IntegrityWatch | None = None
        self._problem: str | None = None
        self._last_check: str = "not yet"
        self._pending = 0
        self.checks = 0  # completed checks (tests wait on it)

    def _emit(self, event_type: str, data, clauses) -> None:
        self.ctx.emit(event_type, data, clauses=clauses)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="integrity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._stop_watch()

    def on_policy(self, bundle: PolicyBundle) -> None:
        self.ctx.policy = bundle
        try:
            config = IntegrityConfig.from_section(bundle.integrity)
        except IntegrityConfigError as exc:
            self._problem = f"policy refused, keeping the previous one: {exc}"
            return
        folders_changed = (config.paths, config.drop_paths) != (self.config.paths, self.config.drop_paths)
        self.config = self.engine.config = config
        if folders_changed and self._watch is not None:
            self._stop_watch()
            self._start_watch()
        self._wake.set()  # check now: accepted changes move the baseline

    def health(self) -> CollectorHealth:
        if self._problem:
            return unhealthy(self._problem)
        if self._watch is not None and self._watch.last_error:
            return unhealthy(f"watch: {self._watch.last_error}")
        return healthy(f"last check {self._last_check}; {self._pending} change(s) waiting for acceptance")

    # ------------------------------------------------------------------ work

    def _start_watch(self) -> None:
        folders = list(self.config.paths) + self.config.drop_folders()
        self._watch = IntegrityWatch(self.engine.check_path, folders, settle_s=self.settle_s)
        self._watch.start()

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _prepare_baseline(self) -> None:
        try:
            self.engine.load_baseline()
        except BaselineMissing:
            self.engine.build_baseline(reason="created")
        except BaselineTampered:
            # Reported (integrity.tampered); keep watching from a fresh, chained baseline.
            # What changed while the baseline was not trustworthy is for a person to look at.
            self._problem = "the baseline was tampered with; a new one was made (see the incident)"
            self.engine.build_baseline(reason="rebuilt_after_tamper")

    def _check_once(self) -> None:
        full = self.engine.full_check_due()
        try:
            result = self.engine.check(full=full)
        except BaselineMissing:
            self.engine.build_baseline(reason="created")
            return
        except BaselineTampered:
            self._problem = "the baseline was tampered with; a new one was made (see the incident)"
            self.engine.build_baseline(reason="rebuilt_after_tamper")
            return
        self._pending = sum(
            1
            for c in result.changes
            if not result.explained.get(c.path) or not result.explained[c.path].by_package_manager
        )
        self._last_check = (
            f"{time.strftime('%Y-%m-%d %H:%M')} ({'full' if full else 'fast'}, "
            f"{result.files} files, {result.duration_s:.1f} s)"
        )

    def _run(self) -> None:
        try:
            self._prepare_baseline()
        except Exception as exc:
            self._problem = f"cannot make the baseline: {exc.__class__.__name__}: {exc}"
            self.ctx.log.exception("integrity baseline failed")
            return
        self._start_watch()
        while not self._stop.is_set():
            try:
                self._check_once()
                if self._problem and self._problem.startswith(("cannot", "check failed")):
                    self._problem = None
            except Exception as exc:  # a failed check is reported in health and retried next time
                self._problem = f"check failed: {exc.__class__.__name__}: {exc}"
                self.ctx.log.exception("integrity check failed")
            self.checks += 1
            self._wake.wait(self.config.check_interval_minutes * 60)
            self._wake.clear()
