"""The parallel hasher gives exactly hashlib's answers, in order, on both cores, and
the metadata it returns is the file's own (from the descriptor it read)."""

from __future__ import annotations

import hashlib
import os

from agent.integrity import hasher


def _tree(tmp_path, count=300):
    paths = []
    for i in range(count):
        body = os.urandom(i * 97 % 70000)
        (tmp_path / f"f{i}").write_bytes(body)
        paths.append(str(tmp_path / f"f{i}"))
    return paths


def test_pool_and_single_process_match_hashlib(tmp_path, monkeypatch):
    paths = _tree(tmp_path)
    paths.append(str(tmp_path / "missing"))
    expected = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths[:-1]] + [None]
    assert hasher.hash_paths(paths, workers=1) == expected
    monkeypatch.setattr(hasher, "_POOL_MIN_FILES", 10)  # force the process pool on a small job
    monkeypatch.setattr(hasher, "_BATCH_FILES", 7)
    seen = []
    assert hasher.hash_paths(paths, workers=2, progress=lambda f, b: seen.append((f, b))) == expected
    sizes = sum(os.path.getsize(p) for p in paths[:-1])
    assert seen[-1] == (len(paths), sizes)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)  # progress only moves forward


def test_sizes_around_buffer_and_mmap_limits(tmp_path, monkeypatch):
    """Empty, one byte, exactly one buffer, one buffer + 1, mapped: every read path."""
    monkeypatch.setattr(hasher, "_BUFFER", 4096)
    monkeypatch.setattr(hasher, "_MMAP_MIN", 3 * 4096)
    monkeypatch.setattr(hasher, "_MMAP_STEP", 4096)
    for size in (0, 1, 4095, 4096, 4097, 8192, 3 * 4096 - 1, 3 * 4096, 5 * 4096 + 17):
        body = os.urandom(size)
        path = tmp_path / f"s{size}"
        path.write_bytes(body)
        found = hasher.hash_with_stat(str(path))
        st = os.lstat(path)
        assert found is not None and found.sha256 == hashlib.sha256(body).hexdigest(), size
        assert (found.size, found.ino, found.ctime_ns, found.mode) == (
            size, st.st_ino, st.st_ctime_ns, st.st_mode,
        )  # fmt: skip


def test_not_a_regular_file_is_no_answer(tmp_path):
    (tmp_path / "target").write_bytes(b"x")
    os.symlink(tmp_path / "target", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    assert hasher.hash_with_stat(str(tmp_path / "link")) is None  # O_NOFOLLOW: a link is not read through
    assert hasher.hash_with_stat(str(tmp_path / "fifo")) is None  # opened without blocking, then refused
    assert hasher.hash_file(str(tmp_path)) is None  # a folder


def test_workers_are_lean_processes_and_a_dead_worker_loses_nothing(tmp_path, monkeypatch):
    """The pool is our own `hashworker` processes; if one dies mid-job (OOM killer, kill -9),
    the batches it held are hashed by the parent and every answer is still right."""
    paths = _tree(tmp_path, 120)
    expected = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]
    monkeypatch.setattr(hasher, "_POOL_MIN_FILES", 10)
    monkeypatch.setattr(hasher, "_BATCH_FILES", 5)
    with hasher.HashStream(workers=2) as stream:
        for path in paths[:20]:
            stream.add(path)
        workers = list(stream._pool)
        assert len(workers) == 2
        cmdline = open(f"/proc/{workers[0].process.pid}/cmdline", "rb").read().split(b"\0")
        assert b"agent.integrity.hashworker" in cmdline
        workers[0].process.kill()
        workers[0].process.wait()
        for path in paths[20:]:
            stream.add(path)
        found = stream.finish()
    assert [h.sha256 if h else None for h in found] == expected
    assert all(w.process.poll() is not None for w in workers)  # nothing left running
