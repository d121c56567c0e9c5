"""Walk the file tree in a fixed order, so a scan can resume where it stopped.

The order is depth-first with the entries of each folder sorted by name; a
position is (root index, path components below the root).  `walk(..., resume_after=p)`
yields exactly the files that come after `p`, without stat-ing the ones before.
Symlinks are never followed, special files (FIFOs, sockets, devices) are
skipped, and excluded paths are pruned whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

Position = tuple[int, tuple[str, ...]]


@dataclass(frozen=True)
class WalkEntry:
    path: str
    position: Position
    size: int


def _is_excluded(path: str, excludes: tuple[str, ...]) -> bool:
    return any(path == ex or path.startswith(ex.rstrip("/") + "/") for ex in excludes)


def walk(roots: Iterable[str | Path], *, exclude: Iterable[str | Path] = (),
         resume_after: Position | None = None,
         on_error=None) -> Iterator[WalkEntry]:
    """Regular files under `roots` in resumable order (see module docstring)."""
    roots = [os.path.abspath(str(root)) for root in roots]
    excludes = tuple(os.path.abspath(str(ex)) for ex in exclude)
    for index, root in enumerate(roots):
        if resume_after is not None and index < resume_after[0]:
            continue
        resume = resume_after[1] if resume_after is not None and index == resume_after[0] else None
        if _is_excluded(root, excludes):
            continue
        try:
            st = os.lstat(root)
        except OSError as exc:
            if on_error:
                on_error(root, exc)
            continue
        if stat.S_ISREG(st.st_mode):
            if resume is None:
                yield WalkEntry(root, (index, ()), st.st_size)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(root, index, (), resume, excludes, on_error)


def _walk_dir(path: str, index: int, parts: tuple[str, ...], resume: tuple[str, ...] | None,
              excludes: tuple[str, ...], on_error) -> Iterator[WalkEntry]:
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        if on_error:
            on_error(path, exc)
        return
    depth = len(parts)
    for entry in entries:
        child_resume: tuple[str, ...] | None = None
        if resume is not None and depth < len(resume):
            mark = resume[depth]
            if entry.name < mark:
                continue  # done before the interruption
            if entry.name == mark:
                if depth == len(resume) - 1:
                    continue  # the last file finished before the interruption
                child_resume = resume  # go down the path of the interruption
        if _is_excluded(entry.path, excludes):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            if on_error:
                on_error(entry.path, exc)
            continue
        child_parts = parts + (entry.name,)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(entry.path, index, child_parts, child_resume, excludes, on_error)
        elif stat.S_ISREG(st.st_mode):
            yield WalkEntry(entry.path, (index, child_parts), st.st_size)


def pseudo_filesystem_mounts(mounts_file: str | Path = "/proc/self/mounts") -> list[str]:
    """Mount points a full scan must never enter: pseudo file systems, and network shares
    (a school file server must not be scanned by every workstation at once)."""
    pseudo = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs",
              "tracefs", "fusectl", "configfs", "pstore", "bpf", "mqueue", "hugetlbfs", "autofs",
              "binfmt_misc", "efivarfs", "rpc_pipefs", "nsfs",
              "nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p"}
    points = []
    try:
        for line in Path(mounts_file).read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] in pseudo:
                points.append(fields[1].replace("\\040", " "))
    except OSError:
        pass
    return points
