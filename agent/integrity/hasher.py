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

Workers are processes, not threads: the per-file Python work then runs on both cores
too, instead of queueing for one interpreter lock.  They are lean processes of our own
(`hashworker`, fed through pipes), not a multiprocessing pool: a "spawn" child
re-imports the parent's main module (the whole agent), which cost more CPU than
hashing a small tree.  The parent only walks, hands out batches to whichever worker
has the least queued, and unpacks the answers.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import mmap
import os
import stat as statmod
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

_BUFFER = 256 << 10  # one read buffer per worker: fits the CPU's L2 cache, so hashing reads it from there
_MMAP_MIN = 1 << 20  # from this size on, map the file instead of reading it (a copy costs more than faults)
_MMAP_STEP = 1 << 20  # hash a mapping in 1 MiB steps (measured faster than one call on the whole map)
# Below this much work starting worker processes costs more than it saves (~30 ms each).
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
ANSWER = _ANSWER = struct.Struct("<?32sqqqQQQQQ")
_MISSING = _ANSWER.pack(False, bytes(32), 0, 0, 0, 0, 0, 0, 0, 0)


def new_buffer() -> bytearray:
    return bytearray(_BUFFER)


def _open(path: str | bytes) -> int:
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


def pack_answer(path: str | bytes, buf: bytearray) -> bytes:
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
    return _unpack(pack_answer(path, buffer if buffer is not None else bytearray(_BUFFER)))[0]


class _Worker:
    """One `hashworker` process, the batches it was given (in order), and a thread
    that reads its answers as they come."""

    def __init__(self, on_done: Callable[[], None]) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the `agent` package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.integrity.hashworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.queued: collections.deque[_Batch] = collections.deque()
        self._sent = threading.Semaphore(0)  # one release per batch sent, one more at close
        self._on_done = on_done
        self._reader = threading.Thread(target=self._read_answers, name="integrity-hash-reader", daemon=True)
        self._reader.start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, batch: _Batch) -> None:
        """Queue `batch` on this worker (OSError if it died)."""
        payload = b"\0".join(os.fsencode(p) for p in batch.paths)
        assert self.process.stdin is not None
        self.queued.append(batch)
        try:
            self.process.stdin.write(struct.pack("<I", len(payload)) + payload)
            self.process.stdin.flush()
        except OSError:
            with contextlib.suppress(ValueError):  # the reader may have given it up already
                self.queued.remove(batch)
            raise
        self._sent.release()

    def _read_answers(self) -> None:
        """Answers come back in the order the batches went out."""
        out = self.process.stdout
        assert out is not None
        while True:
            self._sent.acquire()
            if not self.queued:
                return  # closed
            batch = self.queued[0]
            want = len(batch.paths) * _ANSWER.size
            data = out.read(want)
            if len(data) < want:  # the worker died: finish() redoes its batches in this process
                while self.queued:
                    self.queued.popleft().set(None)
                self._on_done()
                return
            self.queued.popleft()
            batch.set(data)
            self._on_done()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._sent.release()  # wake the reader so it sees the end
        self._reader.join(timeout=5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


class _Batch:
    __slots__ = ("paths", "answers", "done")

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.answers: bytes | None = None
        self.done = threading.Event()

    def set(self, answers: bytes | None) -> None:
        self.answers = answers
        self.done.set()


class HashStream:
    """Hash files as the walk finds them; `finish()` gives the answers in the order added.

    Small jobs (the hourly fast check hashes a handful of changed files) are hashed
    in this process at `finish()`.  Once the job is big enough for workers to pay
    off, `workers` worker processes start and take batches while the caller keeps
    walking; a batch goes to the worker with the fewest queued, so both finish
    together.  Use it as a context manager: the workers end even when the walk fails.
    """

    _MAX_QUEUED = 3  # batches queued per worker before the walk waits (keeps the split fair)

    def __init__(self, *, workers: int | None = None, progress: Progress | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        self.files = 0  # paths added so far
        self._hinted_bytes = 0
        self._pool: list[_Worker] = []
        self._batches: list[_Batch] = []
        self._pending: list[_Batch] = []  # not yet handed to a worker
        self._batch: list[str] = []
        self._changed = threading.Condition()

    def __enter__(self) -> HashStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, path: str, size_hint: int = 0) -> None:
        """Queue one regular file; `size_hint` (its lstat size, when the caller has it)
        only helps decide early that a few big files are worth the workers."""
        self._batch.append(path)
        self._hinted_bytes += size_hint
        if len(self._batch) >= _BATCH_FILES or (not self._pool and self._hinted_bytes >= _POOL_MIN_BYTES):
            self._cut()

    def _cut(self) -> None:
        """Close the current batch; hand it to a worker when they run (start them if due)."""
        batch, self._batch = _Batch(self._batch), []
        self.files += len(batch.paths)
        self._batches.append(batch)
        self._pending.append(batch)
        if (
            not self._pool
            and self.workers > 1
            and (self.files >= _POOL_MIN_FILES or self._hinted_bytes >= _POOL_MIN_BYTES)
        ):
            self._pool = [_Worker(self._notify) for _ in range(self.workers)]
        if self._pool:
            self._dispatch(wait=False)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _dispatch(self, *, wait: bool) -> None:
        """Hand pending batches to the least-queued live workers; with `wait`, until none is left."""
        with self._changed:
            while self._pending:
                live = [w for w in self._pool if w.alive()]
                if not live:
                    return  # every worker died: finish() hashes the rest here
                worker = min(live, key=lambda w: len(w.queued))
                if len(worker.queued) >= self._MAX_QUEUED:
                    if not wait and len(self._pending) < 4 * self._MAX_QUEUED:
                        return  # keep walking; the batch waits in `_pending`
                    self._changed.wait(0.05)
                    continue
                try:
                    worker.send(self._pending[0])
                except OSError:  # broken pipe: that worker died
                    worker.process.wait()
                    continue
                self._pending.pop(0)

    def finish(self) -> list[Hashed | None]:
        """Every answer, in the order the paths were added (None where unreadable)."""
        if self._batch:
            self._cut()
        if self._pool:
            self._dispatch(wait=True)
        results: list[Hashed | None] = []
        done_bytes = 0
        buf = bytearray(_BUFFER)
        for batch in self._batches:
            if batch in self._pending:  # never handed out (small job, or the workers died)
                batch.set(None)
            batch.done.wait()
            answers = batch.answers
            if answers is None:
                answers = b"".join(pack_answer(p, buf) for p in batch.paths)
            found = _unpack(answers)
            results.extend(found)
            if self.progress:
                done_bytes += sum(h.size for h in found if h)
                self.progress(len(results), done_bytes)
        self._batches, self._pending = [], []
        self.close()
        return results

    def close(self) -> None:
        for worker in self._pool:
            worker.close()
        self._pool = []


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
