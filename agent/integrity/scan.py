"""Walk the program folders and build the current records (thin edge).

The fast path: a file whose size, mtime, ctime, inode and device all equal the
baseline's keeps the baseline's hash without being read.  A full check re-reads
everything, which is what catches a change that kept even ctime (possible only
by setting the system clock back or editing the disk under the file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.integrity import walk
from agent.integrity.hasher import HashStream, Progress, hash_with_stat
from agent.integrity.model import FILE, LINK, FileRecord, link_hash, pack_key, record_from_stat, record_key
from agent.integrity.walk import ExcludeMatcher


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
    walk_job: walk.WalkJob | None = None,
) -> ScanResult:
    """Walk `roots` and hash what needs hashing.

    With `full=False`, a file whose `fast_key` equals `known[path]` (the baseline's)
    is only counted in `seen`: not read, not even turned into a record; this loop is
    the whole cost of an hourly check, so it stays lean.  Files are hashed while the
    walk goes on; `on_total(files, bytes)` is told the size of the whole hashing job
    when the walk ends (for a progress bar; `progress` is only called after that).
    `walk_job`: the walk of the folder roots, started ahead (`walk.WalkJob`), for a big fast check.
    """
    known = known if (known is not None and not full) else {}
    with HashStream(workers=workers, progress=progress) as hasher:
        result, to_hash = _walk(roots, ExcludeMatcher(exclude), known, hasher, list(exclude), walk_job)
        if on_total:
            on_total(len(to_hash), 0)  # sizes are learnt while hashing (a full walk does no lstat)
        answers = hasher.finish()
    records = result.records
    for path, found in zip(to_hash, answers, strict=True):
        if found is None:
            _take_unhashed(path, result)
            continue
        result.hashed_files += 1
        result.hashed_bytes += found.size
        records[path] = FileRecord(
            path, FILE, found.size, found.mtime_ns, found.ctime_ns, found.ino, found.dev,
            found.mode & 0o7777, found.uid, found.gid, found.sha256,
        )  # fmt: skip
    return result


def _take_unhashed(path: str, result: ScanResult) -> None:
    """A file the worker could not hash: gone, swapped for a symlink or a fifo, or unreadable."""
    record = read_record(path)
    if record is None:
        result.seen.discard(path)  # removed while we walked (or no longer a kind we keep)
    elif record.kind == LINK:
        result.records[path] = record.with_hash(link_hash(record.target or ""))
    else:
        result.hashed_files += 1
        result.unreadable.append(path)
        result.records[path] = record


def _walk(
    roots: Iterable[str],
    excluded: ExcludeMatcher,
    known: Mapping[str, bytes],
    hasher: HashStream,
    exclude_patterns: list[str] | None = None,
    walk_job: walk.WalkJob | None = None,
) -> tuple[ScanResult, list[str]]:
    """The walk: every file and symlink path into `seen`; symlinks recorded at once;
    regular files the fast path cannot vouch for handed to `hasher` (which hashes them
    while the walk goes on) and returned in the order handed over.

    Without `known` (a full scan) there is nothing to compare, so no lstat at all: the
    directory entry's type says "regular file" and the hasher's fstat gives the rest.
    """
    known_get = known.get
    check_fast_path = bool(known)
    seen: set[str] = set()
    result = ScanResult({}, seen)
    records = result.records
    to_hash: list[str] = []
    add = hasher.add
    parallel = check_fast_path and hasher.workers > 1 and len(known) >= walk.PARALLEL_MIN_FILES
    folders: list[str] = []  # with `parallel`: the root folders, walked by a walk.WalkJob

    for root in roots:
        root = os.path.normpath(root)
        if excluded(root) or not os.path.lexists(root):
            continue
        if not os.path.isdir(root) or os.path.islink(root):
            record = read_record(root)
            if record is not None:
                seen.add(root)
                if known.get(root) != record_key(record):
                    if record.kind == LINK:
                        records[root] = record.with_hash(link_hash(record.target or ""))
                    else:
                        to_hash.append(root)
                        add(root, record.size)
            continue
        if walk_job is not None and root in walk_job.folders:
            continue
        if parallel:
            folders.append(root)
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
                        if not check_fast_path and entry.is_file(follow_symlinks=False):
                            seen.add(path)  # full scan: no lstat, the hasher fstat's what it opens
                            to_hash.append(path)
                            add(path)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if check_fast_path and known_get(path) == pack_key(
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                        st.st_dev,
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                    ):
                        seen.add(path)
                        continue  # the fast path: untouched (model.fast_key, inlined: this runs per file)
                    mode = st.st_mode & 0o170000
                    if mode == 0o100000:  # regular file
                        seen.add(path)
                        to_hash.append(path)
                        add(path, st.st_size)
                    elif mode == 0o120000:  # symlink
                        try:
                            target = os.readlink(path)
                        except OSError:
                            continue
                        record = record_from_stat(path, st, target)
                        if record is not None:
                            seen.add(path)
                            records[path] = record.with_hash(link_hash(target))
    if folders and walk_job is None:
        walk_job = walk.WalkJob(
            folders, exclude_patterns or [], hasher.workers, excluded if excluded.active else None
        )
    if walk_job is not None:
        try:
            matched, files, look_again = walk_job.result(known)
        finally:
            walk_job.close()
        seen |= matched
        for path in files:
            seen.add(path)
            to_hash.append(path)
            add(path)
        for path in look_again:  # symlinks, and what differs from the baseline
            record = read_record(path)
            if record is None:
                continue
            seen.add(path)
            if record.kind == LINK:
                records[path] = record.with_hash(link_hash(record.target or ""))
            else:
                to_hash.append(path)
                add(path, record.size)
    result.reused = len(seen) - len(records) - len(to_hash)
    return result, to_hash


def scan_one(path: str) -> FileRecord | None:
    """The current record of one path with its hash (the real-time watch uses this)."""
    record = read_record(path)
    if record is None:
        return None
    if record.kind == LINK:
        return record.with_hash(link_hash(record.target or ""))
    found = hash_with_stat(path)
    if found is None:
        return record  # unreadable (sha256 None), or gone this instant
    return FileRecord(
        path, FILE, found.size, found.mtime_ns, found.ctime_ns, found.ino, found.dev,
        found.mode & 0o7777, found.uid, found.gid, found.sha256,
    )  # fmt: skip
