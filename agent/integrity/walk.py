"""The fast-path walk on every core (thin edge): the hourly re-check of an unchanged tree.

A fast check of an unchanged tree is one `lstat` per file and a comparison with the
baseline's key (`model.fast_key`), nothing else, but done 60 000 times in Python it is
still the whole cost of the check, and the `lstat` calls with the Python around them
are most of it.  So the folders are shared out between worker processes
(`python -m agent.integrity.hashworker --walk`, the lean hash worker in its walking
mode).  They take folders one at a time (the parent hands the next one to whichever
worker answers first, so a big folder does not leave the other core idle), `lstat`
every file and symlink below it and answer with all the paths (one NUL-joined string)
and their packed keys (one bytes object, 64 bytes a path, same order).  The workers know
nothing of the baseline: the parent compares the answers with it in bulk
(`_compare_answer`: a zip and a dict lookup per path, no syscall, no object built) and
looks again, itself, at the few paths whose keys differ.  The parent walks the top
levels with `compare_tree` (to have folders to share out) and takes over the folders of
a worker that died.

Protocol on stdin/stdout:
  request: `<I` length, then one folder (UTF-8 with surrogateescape, like os.fsencode);
           EOF ends the worker; the first request is the exclude patterns (JSON);
  answer:  `<II` lengths, then the paths (NUL-joined) and their keys.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import os
import re
import selectors
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.integrity.hashworker import read_exact, write_all

# model.fast_key's packing (model._KEY), repeated so that a walking worker does not import
# hashlib through model (start-up time); tests/integrity/test_walk.py checks they agree.
pack_key = struct.Struct("<qqqQQQQQ").pack
_LENGTH = struct.Struct("<I")
_TWO = struct.Struct("<II")
_KEY_SIZE = 64  # model._KEY.size: eight 8-byte integers
_KEYS = struct.Struct(f"{_KEY_SIZE}s")  # to cut a worker's keys apart (iter_unpack)
_first = operator.itemgetter(0)
# Below this many baseline files the two process start-ups (~30 ms each) cost more than they save.
PARALLEL_MIN_FILES = 4000
# The parent expands the top folders until there are this many per worker (for balance).
_UNITS_PER_WORKER = 8


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


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(data: bytes) -> list[str]:
    return data.decode("utf-8", "surrogateescape").split("\0") if data else []


@dataclass
class TreeComparison:
    """What `compare_tree` found: paths the fast path vouched for, regular files and
    symlinks it could not (new or changed), and folders left for later (not recursive)."""

    matched: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


def compare_tree(
    folders: Iterable[str],
    excluded: Callable[[str], bool] | None,
    known: Mapping[str, bytes],
    *,
    recursive: bool = True,
    into: TreeComparison | None = None,
) -> TreeComparison:
    """Walk `folders` (and below, if `recursive`), compare each file's lstat key with `known`.

    This loop is the whole cost of an hourly check, so it stays lean: no records, no
    objects per file; fifos, sockets and devices are not kept (as in a full scan)."""
    found = into if into is not None else TreeComparison()
    matched, files, links = found.matched, found.files, found.links
    known_get = known.get
    stack = list(folders)
    later = found.folders if not recursive else stack
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue  # vanished or unreadable folder: its files show as removed
        with entries:
            for entry in entries:
                path = entry.path
                if excluded is not None and excluded(path):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        later.append(path)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if known_get(path) == pack_key(
                    st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_mode,
                    st.st_uid, st.st_gid,
                ):  # fmt: skip
                    matched.append(path)  # the fast path: untouched
                    continue
                kind = st.st_mode & 0o170000
                if kind == 0o100000:
                    files.append(path)
                elif kind == 0o120000:
                    links.append(path)
    return found


# ---------------------------------------------------------------------- the worker side


def stat_tree(
    folder: str,
    excluded: Callable[[str], bool] | None,
    into: tuple[list[str], list[bytes]] | None = None,
    later: list[str] | None = None,
) -> tuple[list[str], list[bytes]]:
    """Every regular file and symlink below `folder` (not excluded) and its packed lstat key;
    with `later`, only `folder` itself, its subfolders going to `later`."""
    paths, keys = into if into is not None else ([], [])
    stack = [folder]
    push = later.append if later is not None else stack.append
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                path = entry.path
                if excluded is not None and excluded(path):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        push(path)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_mode & 0o170000 in (0o100000, 0o120000):  # regular file, symlink
                    paths.append(path)
                    keys.append(pack_key(
                        st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_mode,
                        st.st_uid, st.st_gid,
                    ))  # fmt: skip
    return paths, keys


def _read_message(fd: int) -> bytes | None:
    header = read_exact(fd, _LENGTH.size)
    if header is None:
        return None
    size = _LENGTH.unpack(header)[0]
    return read_exact(fd, size) if size else b""


def serve(fd_in: int = 0, fd_out: int = 1) -> None:
    """The worker's loop (see the module docstring)."""
    first = _read_message(fd_in)
    if first is None:
        return
    matcher = ExcludeMatcher(json.loads(first))
    excluded = matcher if matcher.active else None
    while (request := _read_message(fd_in)) is not None:
        paths, keys = stat_tree(request.decode("utf-8", "surrogateescape"), excluded)
        blobs = (_enc("\0".join(paths)), b"".join(keys))
        write_all(fd_out, _TWO.pack(*map(len, blobs)) + b"".join(blobs))


# ---------------------------------------------------------------------- the parent side


class _WalkWorker:
    def __init__(self, exclude: list[str]) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the `agent` package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.integrity.hashworker", "--walk"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.folder: str | None = None  # the folder it is walking now
        self._send(_enc(json.dumps(exclude)))

    def _send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        write_all(self.process.stdin.fileno(), _LENGTH.pack(len(data)) + data)

    def give(self, folder: str) -> None:
        self.folder = folder
        self._send(_enc(folder))

    def answer(self) -> tuple[bytes, bytes] | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        header = read_exact(fd, _TWO.size)
        if header is None:
            return None
        n_paths, n_keys = _TWO.unpack(header)
        paths = read_exact(fd, n_paths) if n_paths else b""
        keys = read_exact(fd, n_keys) if n_keys else b""
        if paths is None or keys is None:
            return None
        self.folder = None
        return paths, keys

    def close(self) -> None:
        if self.folder is not None:  # still walking (we are giving up on it): no need to wait
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.process.wait()  # an idle worker ends at EOF at once (a timeout here would poll with sleeps)


def _compare_answer(
    paths: list[str], keys: bytes, known: Mapping[str, bytes], matched: set[str], differ: list[str]
) -> None:
    """A worker's answer against the baseline: the paths whose key is the baseline's go to
    `matched`, the others (changed or new) to `differ`.  In the usual case (nothing changed)
    no Python code runs per path: the keys are cut by struct, the baseline's looked up by
    map, and the two lists compared, all in C; only a folder with a change is gone through."""
    now = list(map(_first, _KEYS.iter_unpack(keys)))
    then = list(map(known.get, paths))
    if now == then:
        matched.update(paths)
        return
    changed = [path for path, key, was in zip(paths, now, then, strict=True) if key != was]
    matched.update(paths)
    if changed:
        matched.difference_update(changed)
        differ.extend(changed)


def folder_roots(roots: Iterable[str], excluded: Callable[[str], bool]) -> list[str]:
    """The roots that are folders to walk (as `scan` tells them from single files)."""
    return [
        root
        for root in map(os.path.normpath, roots)
        if not excluded(root) and os.path.isdir(root) and not os.path.islink(root)
    ]


class WalkJob:
    """The `lstat` work of a fast check of `folders`, shared out between `workers` processes.

    It starts at once (a thread hands folders to the workers and keeps their answers: only
    I/O, so it hardly competes with the caller), so the walk goes on while the caller loads
    and verifies the baseline; `result(known)` then compares everything with the baseline.
    A worker that dies is replaced by this process for its folder and the rest; if the job
    fails altogether, `result` walks everything here.  Always `close()` it."""

    def __init__(
        self, folders: list[str], exclude: Iterable[str], workers: int, excluded: Callable[[str], bool] | None
    ) -> None:
        self.folders = list(folders)
        self._exclude = list(exclude)
        self._workers = workers
        self._excluded = excluded
        self._top: tuple[list[str], list[bytes]] = ([], [])  # what the thread listed itself
        self._answers: list[tuple[bytes, bytes]] = []
        self._orphans: list[str] = []
        self._pool: list[_WalkWorker] = []
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="integrity-walk", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._walk()
        except BaseException:  # noqa: BLE001 - anything: result() walks in this process instead
            self._failed = True
        finally:
            for worker in self._pool:
                worker.close()

    def _walk(self) -> None:
        units = list(self.folders)
        for _ in range(3):  # list the top levels here until there are enough folders to share
            if len(units) >= _UNITS_PER_WORKER * self._workers or not units:
                break
            later: list[str] = []
            for folder in units:
                stat_tree(folder, self._excluded, into=self._top, later=later)
            units = later
        units.reverse()  # hand out in walk order (pop from the end)
        pool, orphans = self._pool, self._orphans
        with selectors.DefaultSelector() as selector:
            for _ in range(min(self._workers, len(units))):
                try:
                    worker = _WalkWorker(self._exclude)
                except OSError:
                    continue
                pool.append(worker)
                try:
                    worker.give(units.pop())
                except OSError:
                    orphans.append(worker.folder or "")
                    pool.remove(worker)
                    worker.close()
                    continue
                assert worker.process.stdout is not None
                selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
            while pool:
                for key, _ in selector.select():
                    worker = key.data
                    answer = worker.answer()
                    if answer is not None:
                        self._answers.append(answer)
                    elif worker.folder is not None:  # died: its folder is walked by result()
                        orphans.append(worker.folder)
                    try:
                        if answer is not None and units:
                            worker.give(units.pop())
                            continue
                    except OSError:
                        orphans.append(worker.folder or "")
                    selector.unregister(key.fileobj)
                    pool.remove(worker)
                    worker.close()
        orphans.extend(units)  # no worker could be started

    def result(self, known: Mapping[str, bytes]) -> tuple[set[str], list[str], list[str]]:
        """(matched paths as a set, regular files to hash, paths to look at again: symlinks and
        what differs from `known`, for the caller's `lstat` to tell file, symlink or gone)."""
        self._thread.join()
        if self._failed:
            found = compare_tree(self.folders, self._excluded, known)
            return set(found.matched), found.files, found.links
        matched: set[str] = set()
        differ: list[str] = []
        _compare_answer(self._top[0], b"".join(self._top[1]), known, matched, differ)
        for paths, keys in self._answers:
            _compare_answer(_dec(paths), keys, known, matched, differ)
        found = compare_tree(self._orphans, self._excluded, known)
        matched.update(found.matched)
        return matched, found.files, found.links + differ

    def close(self) -> None:
        """Stop what is still running (the caller gave up, e.g. a tampered baseline)."""
        if self._thread.is_alive():
            for worker in list(self._pool):
                if worker.process.poll() is None:
                    worker.process.kill()
            self._thread.join()
