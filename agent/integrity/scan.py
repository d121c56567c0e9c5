"""Walk the program folders and build the current records (thin edge).

The fast path: a file whose size, mtime, ctime, inode and device all equal the
baseline's keeps the baseline's hash without being read.  A full check re-reads
everything, which is what catches a change that kept even ctime (possible only
by setting the system clock back or editing the disk under the file system).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.integrity.hasher import Progress, hash_paths
from agent.integrity.model import LINK, FileRecord, link_hash, pack_key, record_from_stat, record_key


class ExcludeMatcher:
    """Shell-style patterns (`/usr/lib/python3*/__pycache__`, `*.pyc`) on full paths."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = [p for p in patterns if p]
        self.active = bool(patterns)
        self._regex = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None
        )

    def __call__(self, path: str) -> bool:
        return bool(self._regex and self._regex.match(path))


def read_record(path: str) -> FileRecord | None:
    """A record (no hash) of one path from lstat; None if gone or not a kind we keep."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    target = None
    if (st.st_mode & 0o170000) == 0o120000:
        try:
            target = os.readlink(path)
        except OSError:
            return None
    return record_from_stat(path, st, target)


@dataclass
class ScanResult:
    """`records`: hashed records of the files the fast path could not vouch for (every
    file on a full scan); `seen`: every path found, to tell what was removed."""

    records: dict[str, FileRecord]
    seen: set[str] = field(default_factory=set)
    hashed_files: int = 0
    hashed_bytes: int = 0
    reused: int = 0  # files the fast path did not read
    unreadable: list[str] = field(default_factory=list)


def scan(
    roots: Iterable[str],
    exclude: Iterable[str] = (),
    *,
    known: Mapping[str, bytes] | None = None,
    full: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Walk `roots` and hash what needs hashing.

    With `full=False`, a file whose `fast_key` equals `known[path]` (the baseline's)
    is only counted in `seen`: not read, not even turned into a record; this loop is
    the whole cost of an hourly check, so it stays lean.  `on_total(files, bytes)` is
    told the size of the hashing job before it starts (for a progress bar).
    """
    known = known if (known is not None and not full) else {}
    excluded = ExcludeMatcher(exclude)
    known_get = known.get
    seen: set[str] = set()
    candidates: list[FileRecord] = []
    for root in roots:
        root = os.path.normpath(root)
        if excluded(root) or not os.path.lexists(root):
            continue
        if not os.path.isdir(root) or os.path.islink(root):
            record = read_record(root)
            if record is not None:
                seen.add(root)
                if known.get(root) != record_key(record):
                    candidates.append(record)
            continue
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                entries = os.scandir(folder)
            except OSError:
                continue  # vanished or unreadable folder: its files show as removed
            with entries:
                for entry in entries:
                    path = entry.path
                    if excluded.active and excluded(path):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(path)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    seen.add(path)
                    if known_get(path) == pack_key(
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                        st.st_dev,
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                    ):
                        continue  # the fast path: untouched (model.fast_key, inlined: this runs per file)
                    try:
                        target = os.readlink(path) if entry.is_symlink() else None
                    except OSError:
                        continue
                    record = record_from_stat(path, st, target)
                    if record is None:
                        seen.discard(path)
                    else:
                        candidates.append(record)
    result = ScanResult({}, seen, reused=len(seen) - len(candidates))
    to_hash = []
    for record in candidates:
        if record.kind == LINK:
            result.records[record.path] = record.with_hash(link_hash(record.target or ""))
        else:
            to_hash.append(record)
    sizes = [r.size for r in to_hash]
    result.hashed_files, result.hashed_bytes = len(to_hash), sum(sizes)
    if on_total:
        on_total(len(to_hash), sum(sizes))
    hashes = hash_paths([r.path for r in to_hash], sizes, workers=workers, progress=progress)
    for record, sha in zip(to_hash, hashes, strict=True):
        if sha is None:
            if not os.path.lexists(record.path):
                seen.discard(record.path)
                continue  # removed while we walked
            result.unreadable.append(record.path)
        result.records[record.path] = record.with_hash(sha)
    return result


def scan_one(path: str) -> FileRecord | None:
    """The current record of one path with its hash (the real-time watch uses this)."""
    from agent.integrity.hasher import hash_file

    record = read_record(path)
    if record is None:
        return None
    if record.kind == LINK:
        return record.with_hash(link_hash(record.target or ""))
    return record.with_hash(hash_file(path))
