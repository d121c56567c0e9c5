"""SHA-256 of many files on every core (thin edge).

Python's hashlib is OpenSSL's SHA-256 (SHA-NI where the CPU has it), so the work
is the same as `openssl speed`'s; what costs extra is opening each file.  One
process per core hashes batches of files, so the per-file Python overhead also
runs in parallel (threads would share one interpreter lock for it).
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

_CHUNK = 1 << 20  # 1 MiB reads
_MMAP_MIN = 256 << 10  # from this size on, map the file instead of reading it
# Below this much work a process pool costs more than it saves (start-up ~0.1 s).
_POOL_MIN_BYTES = 64 << 20
_POOL_MIN_FILES = 2000
# A batch is what one worker takes at a time: big enough to amortise the IPC,
# small enough that the progress bar moves and both cores finish together.
_BATCH_BYTES = 16 << 20
_BATCH_FILES = 512

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)
_NOATIME = getattr(os, "O_NOATIME", 0)  # reading for a check must not touch atime

Progress = Callable[[int, int], None]  # (files done, bytes done)


def hash_file(path: str, buffer: bytearray | None = None) -> str | None:
    """Hex SHA-256 of a regular file's content; None when it cannot be read (gone, no access)."""
    try:
        try:
            fd = os.open(path, _OPEN_FLAGS | _NOATIME)
        except PermissionError:  # O_NOATIME needs ownership or root
            fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        h = hashlib.sha256()
        size = os.fstat(fd).st_size
        if size >= _MMAP_MIN:
            # Hash straight from the page cache: no copy into a buffer (~20 % faster on big files).
            with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mapped, memoryview(mapped) as view:
                for offset in range(0, len(view), _CHUNK):
                    h.update(view[offset : offset + _CHUNK])
            return h.hexdigest()
        buf = buffer if buffer is not None else bytearray(_CHUNK)
        view = memoryview(buf)
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            h.update(view[:n])
        return h.hexdigest()
    except (OSError, ValueError):  # ValueError: mmap of a file truncated meanwhile
        return None
    finally:
        os.close(fd)


def hash_batch(paths: Sequence[str]) -> list[str | None]:
    """The worker's job: hash a batch of files in order."""
    buf = bytearray(_CHUNK)
    return [hash_file(p, buf) for p in paths]


def _batches(paths: Sequence[str], sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Index ranges [start, end) of consecutive files, each about one batch of work."""
    ranges, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        acc += size
        if acc >= _BATCH_BYTES or i + 1 - start >= _BATCH_FILES:
            ranges.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(paths):
        ranges.append((start, len(paths)))
    return ranges


def hash_paths(
    paths: Sequence[str],
    sizes: Sequence[int],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[str | None]:
    """SHA-256 of every path (None where unreadable), in the same order.

    `sizes` (from the walk's lstat) only balance the batches and drive progress.
    Small jobs run in this process; big ones on `workers` processes (default: all cores).
    """
    total_bytes = sum(sizes)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or (total_bytes < _POOL_MIN_BYTES and len(paths) < _POOL_MIN_FILES):
        results, done_bytes, buf = [], 0, bytearray(_CHUNK)
        for i, path in enumerate(paths):
            results.append(hash_file(path, buf))
            done_bytes += sizes[i]
            if progress and (i % 256 == 255 or i + 1 == len(paths)):
                progress(i + 1, done_bytes)
        return results
    results: list[str | None] = [None] * len(paths)
    ranges = _batches(paths, sizes)
    # spawn, not fork: the agent has threads, and a forked copy of a threaded process can deadlock.
    ctx = multiprocessing.get_context("spawn")
    done_files = done_bytes = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(hash_batch, list(paths[a:b])): (a, b) for a, b in ranges}
        for future in as_completed(futures):
            a, b = futures[future]
            results[a:b] = future.result()
            done_files += b - a
            done_bytes += sum(sizes[a:b])
            if progress:
                progress(done_files, done_bytes)
    return results
