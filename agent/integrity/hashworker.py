"""A hashing worker process: `python -m agent.integrity.hashworker` (thin edge).

Started by `hasher.WorkerPool`, never by hand.  It imports nothing but the hasher,
so it starts in ~30 ms (a multiprocessing "spawn" child re-imports the parent's main
module, which for the agent is the whole agent: ~0.2 s of CPU per worker and ~40 MB).

Protocol on stdin/stdout, one batch at a time:
  request:  4-byte little-endian length, then the paths (bytes) joined by NUL;
  answer:   one `hasher.ANSWER` record per path, in order (fixed size, so no header).
EOF on stdin ends the worker.

With `--walk` it is a walking worker instead (see `agent.integrity.walk`).
"""

from __future__ import annotations

import os
import signal
import struct
import sys

_LENGTH = struct.Struct("<I")


def read_exact(fd: int, n: int) -> bytes | None:
    """Exactly `n` bytes from a pipe, or None when the other side closed it (shared with
    the walking worker, agent.integrity.walk)."""
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(fd_in: int = 0, fd_out: int = 1) -> None:
    from agent.integrity.hasher import new_buffer, pack_answer  # here: a walking worker does not need it

    buf = new_buffer()
    while True:
        header = read_exact(fd_in, _LENGTH.size)
        if header is None:
            return
        payload = read_exact(fd_in, _LENGTH.unpack(header)[0])
        if payload is None:
            return
        write_all(fd_out, b"".join([pack_answer(path, buf) for path in payload.split(b"\0")]))


if __name__ == "__main__":
    # Ctrl-C in the CLI reaches the whole process group: let the parent decide; a
    # worker ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.argv[1:] == ["--walk"]:  # the fast-path walk on every core (agent.integrity.walk)
        from agent.integrity.walk import serve as serve_walk

        serve_walk()
        os._exit(0)  # nothing to flush (os.write); the parent waits for this exit
    else:
        serve()
