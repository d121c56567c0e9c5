"""SHA-256 of many files on every core (thin edge).

Python's hashlib is OpenSSL's SHA-256 (SHA-NI where the CPU has it), so the hashing
itself is `openssl speed`'s.  What costs extra is getting each file's bytes: open,
read (a copy out of the page cache), close, and the Python bookkeeping around them.
On a program folder (tens of thousands of files, most of them a few KB) that
per-file cost is as large as the hashing, so this module is built around it:

* one task carries a *batch* of paths (a few hundred files), never one file, so the
  hand-over between processes is paid once per batch, and the answers come back
  packed in one bytes object per batch;
* the walk feeds batches in while it is still walking (`HashStream`): the workers
  hash the first folders while the parent lists the next ones;
* the worker takes the file's metadata from the open descriptor (`fstat`, no second
  path lookup), so a full scan's walk needs no `lstat` per file at all; the record
  then describes exactly the file that was hashed;
* a file is read into one reused buffer, and the read that would only report
  end-of-file is skipped when the first read already returned the whole size;
* big files are hashed straight from the page cache with mmap (no copy).

Workers are processes (spawn), not threads: the per-file Python work then runs on
both cores too, instead of queueing for one interpreter lock.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import os
import stat as statmod
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import NamedTuple

_BUFFER = 256 << 10  # one read buffer per worker: fits the CPU's L2 cache, so hashing reads it from there
_MMAP_MIN = 1 << 20  # from this size on, map the file instead of reading it (a copy costs more than faults)
_MMAP_STEP = 1 << 20  # hash a mapping in 1 MiB steps (measured faster than one call on the whole map)
# Below this much work a process pool costs more than it saves (start-up ~0.1-0.2 s).
_POOL_MIN_FILES = 1000
_POOL_MIN_BYTES = 64 << 20  # counted only where the caller knows sizes (the fast check's lstat)
# A batch is what one worker takes at a time: big enough to amortise the hand-over,
# small enough that the progress bar moves and both cores finish together.  Sizes
# are not known before hashing on a full scan, so a batch is counted in files.
_BATCH_FILES = 256

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)
_NOATIME = getattr(os, "O_NOATIME", 0)  # reading for a check must not touch atime

Progress = Callable[[int, int], None]  # (files done, bytes done)


class Hashed(NamedTuple):
    """A hashed regular file: its SHA-256 and the metadata of the descriptor that was read."""

    sha256: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int
    mode: int  # st_mode (type and permission bits)
    uid: int
    gid: int


# One answer on the wire: ok flag, digest, the eight stat fields (struct packing is far
# cheaper to send back and unpack than pickled objects, per file).
_ANSWER = struct.Struct("<?32sqqqQQQQQ")
_MISSING = _ANSWER.pack(False, bytes(32), 0, 0, 0, 0, 0, 0, 0, 0)


def _open(path: str) -> int:
    try:
        return os.open(path, _OPEN_FLAGS | _NOATIME)
    except PermissionError:  # O_NOATIME needs ownership or root
        return os.open(path, _OPEN_FLAGS)


def _digest_fd(fd: int, size: int, buf: bytearray) -> bytes:
    """SHA-256 (raw) of an open regular file of (about) `size` bytes."""
    if size >= _MMAP_MIN:
        try:
            with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mapped, memoryview(mapped) as view:
                h = hashlib.sha256()
                for offset in range(0, len(view), _MMAP_STEP):
                    h.update(view[offset : offset + _MMAP_STEP])
                return h.digest()
        except ValueError:  # truncated to 0 meanwhile: read what is there
            pass
    view = memoryview(buf)
    n = os.readv(fd, [buf])
    h = hashlib.sha256(view[:n])
    # A short first read of exactly the size fstat saw is the whole file: skip the
    # read that would only say end-of-file.  Anything else: read until it does.
    if n == len(buf) or n != size:
        while n:
            n = os.readv(fd, [buf])
            h.update(view[:n])
    return h.digest()


def _answer(path: str, buf: bytearray) -> bytes:
    """The packed answer for one path: digest and fstat of what was read, or _MISSING
    (gone, no access, or not a regular file any more)."""
    try:
        fd = _open(path)
    except OSError:
        return _MISSING
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):  # swapped for a fifo or a folder since the walk
            return _MISSING
        digest = _digest_fd(fd, st.st_size, buf)
        return _ANSWER.pack(
            True, digest, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev,
            st.st_mode, st.st_uid, st.st_gid,
        )  # fmt: skip
    except OSError:
        return _MISSING
    finally:
        os.close(fd)


def hash_batch(paths: Sequence[str]) -> bytes:
    """The worker's job: hash a batch of files in order; one packed answer per path."""
    buf = bytearray(_BUFFER)
    return b"".join([_answer(path, buf) for path in paths])


def _unpack(answers: bytes) -> list[Hashed | None]:
    out: list[Hashed | None] = []
    for ok, digest, *meta in _ANSWER.iter_unpack(answers):
        out.append(Hashed(digest.hex(), *meta) if ok else None)
    return out


def hash_file(path: str, buffer: bytearray | None = None) -> str | None:
    """Hex SHA-256 of a regular file's content; None when it cannot be read (gone, no access)."""
    found = hash_with_stat(path, buffer)
    return found.sha256 if found else None


def hash_with_stat(path: str, buffer: bytearray | None = None) -> Hashed | None:
    """Hash and metadata of one regular file, from one open; None when it cannot be read."""
    return _unpack(_answer(path, buffer if buffer is not None else bytearray(_BUFFER)))[0]


class HashStream:
    """Hash files as the walk finds them; `finish()` gives the answers in the order added.

    Small jobs (the hourly fast check hashes a handful of changed files) are hashed
    in this process at `finish()`.  Once the job is big enough for a pool to pay
    off, `workers` processes start and take batches while the caller keeps walking.
    Use it as a context manager so the pool is shut down even when the walk fails.
    """

    def __init__(self, *, workers: int | None = None, progress: Progress | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        self.files = 0  # paths added so far
        self._hinted_bytes = 0
        self._pool: Executor | None = None
        self._batches: list[tuple[list[str], Future | None]] = []
        self._batch: list[str] = []

    def __enter__(self) -> HashStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, path: str, size_hint: int = 0) -> None:
        """Queue one regular file; `size_hint` (its lstat size, when the caller has it)
        only helps decide early that a few big files are worth the pool."""
        self._batch.append(path)
        self._hinted_bytes += size_hint
        if len(self._batch) >= _BATCH_FILES or (self._pool is None and self._hinted_bytes >= _POOL_MIN_BYTES):
            self._cut()

    def _cut(self) -> None:
        """Close the current batch; hand it to a worker when the pool runs (start it if due)."""
        batch, self._batch = self._batch, []
        self.files += len(batch)
        if (
            self._pool is None
            and self.workers > 1
            and (self.files >= _POOL_MIN_FILES or self._hinted_bytes >= _POOL_MIN_BYTES)
        ):
            # spawn, not fork: the agent has threads, and a forked copy of a threaded process can deadlock.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            self._batches = [(paths, self._pool.submit(hash_batch, paths)) for paths, _ in self._batches]
        self._batches.append((batch, self._pool.submit(hash_batch, batch) if self._pool else None))

    def finish(self) -> list[Hashed | None]:
        """Every answer, in the order the paths were added (None where unreadable)."""
        if self._batch:
            self._cut()
        results: list[Hashed | None] = []
        done_bytes = 0
        buf = bytearray(_BUFFER)
        for paths, future in self._batches:
            answers = future.result() if future is not None else b"".join(_answer(p, buf) for p in paths)
            found = _unpack(answers)
            results.extend(found)
            if self.progress:
                done_bytes += sum(h.size for h in found if h)
                self.progress(len(results), done_bytes)
        self._batches = []
        self.close()
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def hash_paths(
    paths: Sequence[str], *, workers: int | None = None, progress: Progress | None = None
) -> list[str | None]:
    """SHA-256 of every path (None where unreadable), in the same order.

    Small jobs run in this process; big ones on `workers` processes (default: all cores).
    """
    with HashStream(workers=workers, progress=progress) as stream:
        for path in paths:
            stream.add(path)
        return [h.sha256 if h else None for h in stream.finish()]
