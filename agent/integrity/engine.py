"""The integrity work, end to end: baseline, checks, the watch's single paths.

Used by the collector (`agent.collectors.integrity`) and the CLI.  Everything it
finds leaves through `emit(event_type, data_model, clauses)`.

A detected change is reported once (its fingerprint is remembered in
`reported.json`) and keeps being *pending* until either the responsible person
accepts it (the policy's `integrity.accepted`; the baseline then moves) or, for
a change dpkg's md5sums explain, automatically when `auto_accept_package_updates`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.integrity import walk
from agent.integrity.config import IntegrityConfig, under
from agent.integrity.diff import ADDED, Change, apply_accepted, compare, diff
from agent.integrity.hasher import Progress
from agent.integrity.model import FILE, FileRecord, record_key
from agent.integrity.packages import DpkgDatabase, Explanation, inventory, inventory_diff
from agent.integrity.scan import ExcludeMatcher, scan, scan_one
from agent.integrity.store import Baseline, BaselineStore, BaselineTampered
from policy_server.protocol import (
    IntegrityBaseline,
    IntegrityChanged,
    IntegrityChangeKind,
    IntegrityTampered,
    SoftwareChanged,
)

Emit = Callable[[str, Any, list[str] | None], None]


def _malloc_trim() -> Callable[[], None]:
    """glibc's `malloc_trim(0)`, or nothing elsewhere.  A baseline or check reads big files
    (dpkg's status and .list files) through malloc; without this the freed heap stays in the
    long-lived agent's RSS."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


give_back_memory = _malloc_trim()

DROP_CLAUSES = ["000 §4.2", "000 §6.5"]  # a program dropped by a user: installing third-party software
# What makes a file in a drop place a program: the executable bit, or the start of one.
_PROGRAM_MAGIC = (b"\x7fELF", b"#!", b"MZ")
_PROGRAM_SUFFIXES = (
    ".exe",
    ".msi",
    ".bat",
    ".cmd",
    ".sh",
    ".run",
    ".bin",
    ".appimage",
    ".deb",
    ".jar",
    ".py",
)


@dataclass
class CheckResult:
    changes: list[Change] = field(default_factory=list)  # everything pending after the check
    reported: list[Change] = field(default_factory=list)  # newly reported now
    explained: dict[str, Explanation] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    files: int = 0
    hashed_files: int = 0
    hashed_bytes: int = 0
    reused: int = 0
    full: bool = False
    baseline: Baseline | None = None
    duration_s: float = 0.0


def looks_like_program(record: FileRecord) -> bool:
    if record.kind != FILE:
        return False
    if record.mode & 0o111 or record.path.lower().endswith(_PROGRAM_SUFFIXES):
        return True
    try:
        with open(record.path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(_PROGRAM_MAGIC)


class IntegrityEngine:
    def __init__(
        self,
        config: IntegrityConfig,
        *,
        state_dir: Path,
        key_dir: Path,
        emit: Emit,
        dpkg: DpkgDatabase | None = None,
        workers: int | None = None,
    ) -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self.store = BaselineStore(self.state_dir, Path(key_dir))
        self.emit = emit
        self.dpkg = dpkg if dpkg is not None else DpkgDatabase()
        self.workers = workers
        self._lock = threading.RLock()
        self._reported_path = self.state_dir / "reported.json"
        self._inventory_path = self.state_dir / "inventory.json"
        self._schedule_path = self.state_dir / "schedule.json"
        self._reported: set[tuple] = self._load_reported()
        self._last_files = 0  # files seen by the last baseline or check (is the tree big?)

    @contextlib.contextmanager
    def _exclusive(self):
        """One check or baseline at a time: threads by the lock, processes (the agent and the
        CLI) by an advisory file lock in the state folder."""
        with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.state_dir, 0o700)
            fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._reported = self._load_reported()
                yield
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ small state files

    def _load_json(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return default

    def _save_json(self, path: Path, value: Any) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle)
        os.replace(tmp, path)

    def _load_reported(self) -> set[tuple]:
        return {tuple(item) for item in self._load_json(self._reported_path, [])}

    def _remember_reported(self) -> None:
        self._save_json(self._reported_path, sorted(list(f) for f in self._reported))

    def last_full_check(self) -> float:
        return float(self._load_json(self._schedule_path, {}).get("last_full", 0.0))

    def full_check_due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self.last_full_check() >= self.config.full_rehash_hours * 3600

    # ------------------------------------------------------------------ events

    def _explain(self, change: Change, owners: dict[str, list[str]] | None = None) -> Explanation:
        """`owners`: the changed paths' dpkg owners, looked up together (`DpkgDatabase.owners_of`)."""
        if not self.dpkg.available:
            return Explanation(False, None)
        return self.dpkg.explain(change, owners.get(change.path, []) if owners is not None else None)

    def _emit_change(self, change: Change, how: Explanation, detected_by: str, area: str = "program") -> None:
        old, new = change.old, change.new
        data = IntegrityChanged(
            path=change.path,
            change=IntegrityChangeKind(change.change),
            by_package_manager=how.by_package_manager,
            package=how.package,
            old_sha256=old.sha256 if old else None,
            new_sha256=new.sha256 if new else None,
            old_mode=old.mode if old else None,
            new_mode=new.mode if new else None,
            detected_by=detected_by,
            mtime_restored=change.mtime_restored,
            area=area,
        )
        self.emit("integrity.changed", data, DROP_CLAUSES if area == "drop" else None)

    def _emit_baseline(self, baseline: Baseline, reason: str | None = None) -> None:
        self.emit(
            "integrity.baseline",
            IntegrityBaseline(
                digest=baseline.digest,
                files=len(baseline.keys),
                roots=baseline.roots,
                seq=baseline.seq,
                prev_digest=baseline.prev_digest,
                reason=reason or baseline.reason,
            ),
            None,
        )

    def _emit_tampered(self, exc: BaselineTampered) -> None:
        anchor = self.store.anchor_digest()
        self.emit(
            "integrity.tampered",
            IntegrityTampered(detail=str(exc), last_digest=anchor[1] if anchor else None),
            None,
        )

    # ------------------------------------------------------------------ baseline

    def _package_of(
        self, path: str, old: FileRecord | None, owner: Callable[[str], str | None]
    ) -> str | None:
        """The owning dpkg package (carried over from the baseline when it knew it);
        `owner` is `self.dpkg.owner_lookup(paths)`, taken once per loop."""
        if old is not None and old.package:
            return old.package
        return owner(path)

    def build_baseline(
        self,
        *,
        reason: str = "created",
        progress: Progress | None = None,
        on_total: Callable[[int, int], None] | None = None,
    ) -> Baseline:
        """Hash everything now and make it the baseline (a new version of the chain, which
        continues from the last digest written even when the old baseline is damaged)."""
        with self._exclusive():
            result = scan(
                self.config.paths,
                self.config.exclude,
                full=True,
                workers=self.workers,
                progress=progress,
                on_total=on_total,
            )
            owner = self.dpkg.owner_lookup(result.records)
            records = result.records
            for path, record in records.items():  # in place: no second dict of every record
                records[path] = record.with_package(owner(path))
            del owner, result
            self._last_files = len(records)
            baseline = self.store.save(
                records,
                roots=list(self.config.paths),
                exclude=list(self.config.exclude),
                reason=reason,
                previous=self.store.anchor_digest(),
            )
            self._reported.clear()
            self._remember_reported()
            self._save_json(self._schedule_path, {"last_full": time.time()})
            self._save_json(self._inventory_path, inventory(self.dpkg))
            self._emit_baseline(baseline)
            del records
            give_back_memory()
            return baseline

    def load_baseline(self) -> Baseline:
        """The verified baseline; a tampered one is reported (integrity.tampered) and re-raised."""
        try:
            return self.store.load()
        except BaselineTampered as exc:
            self._emit_tampered(exc)
            raise

    # ------------------------------------------------------------------ checks

    def check(
        self,
        *,
        full: bool = False,
        progress: Progress | None = None,
        on_total: Callable[[int, int], None] | None = None,
    ) -> CheckResult:
        """Compare the disk with the baseline; report new changes; move the baseline for
        accepted and package-manager changes.  Raises BaselineMissing / BaselineTampered.

        Only what the fast path could not vouch for is turned into records: on an
        unchanged tree this is a walk with one lstat per file and nothing else.
        """
        started = time.monotonic()
        with self._exclusive():
            workers = self.workers or os.cpu_count() or 1
            # The walk starts while the baseline is loaded and verified (when the last look at
            # the tree says it is big enough for walking workers).
            walk_job = None
            if not full and workers > 1 and self._last_files >= walk.PARALLEL_MIN_FILES:
                matcher = ExcludeMatcher(self.config.exclude)
                walk_job = walk.WalkJob(
                    walk.folder_roots(self.config.paths, matcher),
                    self.config.exclude,
                    workers,
                    matcher if matcher.active else None,
                )
            try:
                base = self.load_baseline()
                scanned = scan(
                    self.config.paths,
                    self.config.exclude,
                    known=base.keys,
                    full=full,
                    workers=self.workers,
                    progress=progress,
                    on_total=on_total,
                    walk_job=walk_job,
                )
            finally:
                if walk_job is not None:
                    walk_job.close()
            self._last_files = len(scanned.seen)
            current = scanned.records  # only the candidates
            now_excluded = ExcludeMatcher(self.config.exclude)
            was_excluded = ExcludeMatcher(base.exclude)
            gone = list(base.keys.keys() - scanned.seen)  # a set operation: no Python code per path
            out_of_scope = {p for p in gone if not under(p, self.config.paths) or now_excluded(p)}
            accepted_paths = [p for p, _ in self.config.accepted if p in base.keys]
            old = base.fetch([*current, *gone, *accepted_paths])
            # What the disk shows for accepted paths the fast path vouched for: the baseline record.
            view = dict(current)
            for path in accepted_paths:
                if path in scanned.seen and path not in view:
                    view[path] = old[path]
            # Newly watched paths (the policy grew) are taken in silently.
            taken_silently = [
                r
                for p, r in current.items()
                if p not in old and (not under(p, base.roots) or was_excluded(p))
            ]
            for record in taken_silently:
                del view[record.path]
            relevant = {p: r for p, r in old.items() if p not in out_of_scope}
            moved_base, accepted = apply_accepted(relevant, view, self.config.accepted)
            changes = diff(moved_base, view)
            detected_by = "full_check" if full else "fast_check"
            explained: dict[str, Explanation] = {}
            reported, pending, taken_in = [], [], []
            owners = self.dpkg.owners_of(c.path for c in changes) if changes and self.dpkg.available else {}
            for change in changes:
                how = self._explain(change, owners)
                explained[change.path] = how
                if change.fingerprint not in self._reported:
                    self._emit_change(change, how, detected_by)
                    reported.append(change)
                if how.by_package_manager and self.config.auto_accept_package_updates:
                    taken_in.append(change)
                else:
                    pending.append(change)
            drops = {f for f in self._reported if f[0] == "drop" and os.path.lexists(f[1])}
            self._reported = drops | {c.fingerprint for c in pending}
            self._remember_reported()
            new_base = self._move_baseline(
                base,
                old,
                current,
                moved_base,
                accepted,
                pending,
                taken_in,
                taken_silently,
                out_of_scope,
                explained,
            )
            if new_base.digest != base.digest:
                self._emit_baseline(new_base)
            elif full:
                self._emit_baseline(new_base, "verified")
            if full:
                self._save_json(self._schedule_path, {"last_full": time.time()})
            self._check_inventory()
            self.dpkg.forget()
            give_back_memory()
            return CheckResult(
                changes=changes,
                reported=reported,
                explained=explained,
                accepted=accepted,
                files=len(scanned.seen),
                hashed_files=scanned.hashed_files,
                hashed_bytes=scanned.hashed_bytes,
                reused=scanned.reused,
                full=full,
                baseline=new_base,
                duration_s=time.monotonic() - started,
            )

    def _move_baseline(
        self,
        base: Baseline,
        old: dict[str, FileRecord],
        current: dict[str, FileRecord],
        moved_base: dict[str, FileRecord],
        accepted: list[str],
        pending: list[Change],
        taken_in: list[Change],
        taken_silently: list[FileRecord],
        out_of_scope: set[str],
        explained: dict[str, Explanation],
    ) -> Baseline:
        """Write what the check settled into the baseline (nothing at all on an unchanged tree)."""
        pending_paths = {c.path for c in pending}
        upserts: list[FileRecord] = []
        deletes: list[str] = list(out_of_scope)
        content_changed = bool(out_of_scope or taken_silently or accepted or taken_in)
        # Unchanged content with new metadata (e.g. copied over itself): refresh the fast-path cache.
        for path, record in current.items():
            was = old.get(path)
            if (
                was is not None
                and path not in pending_paths
                and compare(was, record) is None
                and record_key(was) != record_key(record)
            ):
                upserts.append(record.with_package(was.package))
        owner = self.dpkg.owner_lookup([*accepted, *(r.path for r in taken_silently)])
        for path in accepted:
            if path in moved_base:
                upserts.append(moved_base[path].with_package(self._package_of(path, old.get(path), owner)))
            else:
                deletes.append(path)
        for change in taken_in:
            if change.new is None:
                deletes.append(change.path)
            else:
                upserts.append(change.new.with_package(explained[change.path].package))
        upserts.extend(r.with_package(owner(r.path)) for r in taken_silently)
        roots_changed = sorted(base.roots) != sorted(self.config.paths) or sorted(base.exclude) != sorted(
            self.config.exclude
        )
        if not upserts and not deletes and not roots_changed:
            return base
        reason = (
            "accepted"
            if accepted
            else "package_update"
            if taken_in
            else "paths_changed"
            if roots_changed
            else base.reason
        )
        return self.store.update(
            base,
            upserts=upserts,
            deletes=deletes,
            roots=list(self.config.paths),
            exclude=list(self.config.exclude),
            reason=reason,
            content_changed=content_changed or roots_changed,
        )

    def _check_inventory(self) -> None:
        old = self._load_json(self._inventory_path, None)
        new = inventory(self.dpkg)
        if old is not None and old != new:
            installed, removed, upgraded = inventory_diff(old, new)
            self.emit(
                "software.changed",
                SoftwareChanged(installed=installed, removed=removed, upgraded=upgraded),
                None,
            )
        if old != new:
            self._save_json(self._inventory_path, new)

    # ------------------------------------------------------------------ the watch

    def check_path(self, path: str) -> Change | None:
        """One path the real-time watch saw change; reports it if it is new.  The baseline
        itself moves only in the periodic checks (which verify its seal first)."""
        with self._lock:
            if under(path, self.config.paths):
                if ExcludeMatcher(self.config.exclude)(path):
                    return None
                old = self.store.lookup(path)
                new = scan_one(path)
                accepted = dict(self.config.accepted)
                if path in accepted and (new.sha256 if new else None) == accepted[path]:
                    return None
                change = compare(old, new)
                area = "program"
            else:
                new = scan_one(path)
                if new is None or not looks_like_program(new):
                    return None
                change, area = Change(path, ADDED, None, new), "drop"
            if change is None:
                return None
            key = change.fingerprint if area == "program" else ("drop",) + change.fingerprint
            if key in self._reported:
                return None
            how = self._explain(change) if area == "program" else Explanation(False, None)
            self._emit_change(change, how, "watch", area)
            self._reported.add(key)
            self._remember_reported()
            return change
