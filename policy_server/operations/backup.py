"""Scheduled backups (000 §3.2) and the check of the newest one.

`kalkan-server run` makes a backup every `backup_interval_s` (default daily) into
`backup_dir` (`KALKAN_BACKUP_DIR`; unset = no scheduled backups) with the same code as
`kalkan-server backup` (policy_server/db/backup.py: SQLite online backup or pg_dump, written
under a temporary name, then checked), keeps the newest `backup_keep` files, and records
each in the audit log.  A restart does not make an extra backup: the job skips a round while
the newest backup is younger than the interval.

`last_backup_state(settings=...)` answers "is there a recent backup, and can it be
restored?": the newest `kalkan-*.sqlite` / `kalkan-*.pgdump` in the folder, checked with
`check_backup` (integrity, schema, Kalkan's tables / a full read of the dump).  The check
reads the whole file, so `cached_backup_state` (used by `/metrics`) checks a file once and
remembers the verdict until a newer file appears.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger("kalkan.backup")

PATTERNS = ("kalkan-*.sqlite", "kalkan-*.pgdump")


@dataclass(frozen=True)
class BackupState:
    configured: bool  # a folder is set (scheduled backups on)
    folder: Path | None
    path: Path | None = None  # the newest backup, if any
    made_at: datetime | None = None  # its modification time (UTC)
    size_bytes: int | None = None
    ok: bool = False  # it exists and passes check_backup
    overdue: bool = True  # older than twice the interval (or none at all)
    problem: str | None = None  # why not ok, for a person (English; `code` for translation)
    code: str | None = None  # e.g. backup.none, backup.damaged, backup.not_configured

    @property
    def age(self) -> timedelta | None:
        return datetime.now(UTC) - self.made_at if self.made_at else None


def backup_folder(settings) -> Path | None:
    folder = getattr(settings, "backup_dir", None)
    return Path(folder) if folder else None


def newest_backup(folder: Path) -> Path | None:
    files = [p for pattern in PATTERNS for p in folder.glob(pattern) if p.is_file()]
    return max(files, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def backup_name(database_url: str, now: datetime) -> str:
    suffix = "sqlite" if make_url(database_url).get_backend_name() == "sqlite" else "pgdump"
    return f"kalkan-{now:%Y%m%d-%H%M%S}.{suffix}"


def last_backup_state(settings, *, now: datetime | None = None) -> BackupState:
    """The newest scheduled backup and whether it passes the check (for the fleet page)."""
    return _state(settings, now=now, cached=False)


def cached_backup_state(settings, *, now: datetime | None = None) -> BackupState:
    """`last_backup_state`, checking a given file only once (for `/metrics`, scraped often)."""
    return _state(settings, now=now, cached=True)


_verdicts: dict[tuple, tuple[bool, str | None, str | None]] = {}
_verdicts_lock = threading.Lock()


def _verdict(path: Path, stat, *, cached: bool) -> tuple[bool, str | None, str | None]:
    from policy_server.db.backup import check_backup
    from policy_server.errors import KalkanError

    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if cached:
        with _verdicts_lock:
            if key in _verdicts:
                return _verdicts[key]
    try:
        check_backup(path)
        verdict = (True, None, None)
    except KalkanError as exc:
        verdict = (False, str(exc), exc.code or "backup.damaged")
    with _verdicts_lock:
        _verdicts.clear()  # only the newest file's verdict is ever asked for
        _verdicts[key] = verdict
    return verdict


def _state(settings, *, now: datetime | None, cached: bool) -> BackupState:
    folder = backup_folder(settings)
    if folder is None:
        return BackupState(
            False,
            None,
            problem="scheduled backups are off: set KALKAN_BACKUP_DIR (docs/operations.md)",
            code="backup.not_configured",
        )
    if not folder.is_dir():
        return BackupState(
            True,
            folder,
            problem=f"the backup folder {folder} does not exist; create it "
            "(owned by the kalkan-server account)",
            code="backup.no_folder",
        )
    path = newest_backup(folder)
    if path is None:
        return BackupState(True, folder, problem=f"no backup in {folder} yet", code="backup.none")
    stat = path.stat()
    made_at = datetime.fromtimestamp(stat.st_mtime, UTC)
    now = now or datetime.now(UTC)
    interval = float(getattr(settings, "backup_interval_s", 86400) or 86400)
    overdue = (now - made_at).total_seconds() > 2 * interval
    ok, problem, code = _verdict(path, stat, cached=cached)
    if ok and overdue:
        problem, code = f"the newest backup is older than {2 * interval / 3600:g} h", "backup.overdue"
    return BackupState(
        True, folder, path, made_at, stat.st_size, ok=ok, overdue=overdue, problem=problem, code=code
    )


def run_scheduled_backup(settings, db, now: datetime) -> Path | None:
    """One round of the backup job: a new checked backup unless the newest is recent; then
    only the newest `backup_keep` are kept.  Returns the new file (None: skipped)."""
    from policy_server.audit import audit
    from policy_server.db.backup import make_backup

    folder = backup_folder(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    interval = float(settings.backup_interval_s)
    newest = newest_backup(folder)
    if newest is not None:
        age = now.timestamp() - newest.stat().st_mtime
        if 0 <= age < interval * 0.9:
            return None
    report = make_backup(settings.database_url, folder / backup_name(settings.database_url, now))
    audit(
        db,
        actor="system",
        action="backup.created",
        target=str(report.path),
        detail={
            "kind": report.kind,
            "bytes": report.size_bytes,
            "rows": report.row_counts,
            "scheduled": True,
            "clauses": ["000 §3.2"],
        },
    )
    db.commit()
    keep = max(1, int(settings.backup_keep))
    files = sorted(
        (p for pattern in PATTERNS for p in folder.glob(pattern) if p.is_file()),
        key=lambda p: (p.stat().st_mtime, p.name),
        reverse=True,
    )
    for old in files[keep:]:
        old.unlink(missing_ok=True)
    log.info("backup written and checked: %s (%s bytes)", report.path, report.size_bytes)
    return report.path


def backup_jobs(settings) -> list:
    """The scheduled backup as a job of the server's scheduler (none when no folder is set)."""
    from policy_server.checks.scheduler import Job

    if backup_folder(settings) is None or float(getattr(settings, "backup_interval_s", 0)) <= 0:
        return []
    # The job looks every 15 minutes (or each interval, if shorter) and backs up when the newest
    # backup is older than the interval: a restart neither adds a backup nor delays one.
    return [
        Job(
            name="backup",
            interval_s=min(float(settings.backup_interval_s), 900.0),
            run=lambda db, now: run_scheduled_backup(settings, db, now),
        )
    ]
