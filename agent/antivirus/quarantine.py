"""Quarantine: infected files moved to a root-only folder, with their metadata, restorable.

Layout of the quarantine folder (mode 0700, owner root):

    <id>.bin        the file's bytes (mode 0400, never executable)
    <id>.json       where it was, its owner, mode, times, SHA-256, the signature
    restored.jsonl  one line per restore: the audit trail (who restored what, when)
    accepted.json   SHA-256s restored by the responsible person: a false positive
                    is not quarantined again

Order of the steps, so that a crash never loses the file: copy to `<id>.bin.tmp`
and fsync, write `<id>.json`, rename to `<id>.bin`, and only then remove the
original.  A restore goes the other way (temporary name beside the target, then
rename), and refuses to overwrite an existing file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.antivirus.checkpoint import read_json, write_json_atomic


class QuarantineError(RuntimeError):
    pass


def _copy_to_disk(source: Path, target: Path) -> None:
    """Copy `source` to `target` and fsync it, so the later rename never exposes a half-written file."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


@dataclass(frozen=True)
class QuarantineEntry:
    id: str
    original_path: str
    signature: str
    sha256: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    quarantined_at: str
    source: str  # full | media | download
    scan_id: str | None = None


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Quarantine:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _ensure_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)

    # -- accepted false positives

    def accepted(self) -> set[str]:
        return set((read_json(self.folder / "accepted.json") or {}).get("sha256", []))

    def _accept(self, sha256: str) -> None:
        hashes = sorted(self.accepted() | {sha256})
        write_json_atomic(self.folder / "accepted.json", {"sha256": hashes})

    # -- quarantine

    def quarantine(self, path: str | Path, *, signature: str, source: str = "full",
                   scan_id: str | None = None) -> QuarantineEntry | None:
        """Move `path` into quarantine; None if its SHA-256 was accepted as a false positive."""
        path = Path(path)
        st = os.lstat(path)
        digest = sha256_of(path)
        if digest in self.accepted():
            return None
        self._ensure_folder()
        entry = QuarantineEntry(
            id=uuid.uuid4().hex[:16], original_path=str(path), signature=signature, sha256=digest,
            size=st.st_size, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid, mtime=st.st_mtime,
            quarantined_at=datetime.now(UTC).isoformat(timespec="seconds"), source=source, scan_id=scan_id,
        )
        tmp = self.folder / f"{entry.id}.bin.tmp"
        try:
            _copy_to_disk(path, tmp)
            os.chmod(tmp, 0o400)
            write_json_atomic(self.folder / f"{entry.id}.json", asdict(entry))
            os.replace(tmp, self.folder / f"{entry.id}.bin")
        except BaseException:
            tmp.unlink(missing_ok=True)
            (self.folder / f"{entry.id}.json").unlink(missing_ok=True)
            raise
        path.unlink()
        return entry

    # -- listing and restoring

    def list(self) -> list[QuarantineEntry]:
        entries = []
        if not self.folder.is_dir():
            return entries
        for meta in sorted(self.folder.glob("*.json")):
            if meta.name == "accepted.json" or not meta.with_suffix(".bin").exists():
                continue
            payload = read_json(meta)
            if payload:
                entries.append(QuarantineEntry(**payload))
        return sorted(entries, key=lambda e: e.quarantined_at)

    def get(self, entry_id: str) -> QuarantineEntry:
        if not entry_id or "/" in entry_id or entry_id.startswith("."):
            raise QuarantineError(
                f"{entry_id!r} is not a quarantine id; 'kalkan-agent av quarantine list' shows them")
        payload = read_json(self.folder / f"{entry_id}.json")
        if not payload or not (self.folder / f"{entry_id}.bin").exists():
            raise QuarantineError(
                f"no quarantined file with id {entry_id!r}; 'kalkan-agent av quarantine list' shows the ids"
            )
        return QuarantineEntry(**payload)

    def restore(self, entry_id: str, *, to: str | Path | None = None, by: str = "") -> Path:
        """Put a quarantined file back (its original path unless `to`); accept its hash."""
        entry = self.get(entry_id)
        target = Path(to) if to else Path(entry.original_path)
        if target.exists() or target.is_symlink():
            raise QuarantineError(
                f"{target} exists already; restore to another place with --to NEW_PATH"
            )
        if not target.parent.is_dir():
            raise QuarantineError(
                f"folder {target.parent} does not exist; create it or restore with --to NEW_PATH")
        stored = self.folder / f"{entry.id}.bin"
        tmp = target.parent / f".{target.name}.kalkan-restore"
        try:
            _copy_to_disk(stored, tmp)
            os.chmod(tmp, entry.mode)
            try:
                os.chown(tmp, entry.uid, entry.gid)
            except PermissionError:
                pass  # not root (tests as a user): the restorer keeps ownership
            os.utime(tmp, (entry.mtime, entry.mtime))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._accept(entry.sha256)
        with open(self.folder / "restored.jsonl", "a") as log:
            log.write(json.dumps({"id": entry.id, "to": str(target), "sha256": entry.sha256, "by": by,
                                  "at": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")
        stored.unlink()
        (self.folder / f"{entry.id}.json").unlink()
        return target
