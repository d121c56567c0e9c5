"""The fast-path walk shared out between walking workers (agent.integrity.walk).

What it must keep: exactly the answers of the walk in one process, on a tree with every
kind of change (content, mtime set back, mode, removal, addition, a symlink pointed
elsewhere, a file swapped for a symlink, an excluded folder), and nothing lost when a
worker dies mid-walk; no worker left running.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import psutil
import pytest

from agent.integrity import model, walk
from tests.integrity.conftest import make_engine


def test_the_workers_pack_keys_like_the_model() -> None:
    assert struct.calcsize("<qqqQQQQQ") == walk._KEY_SIZE == model._KEY.size
    st = os.lstat(__file__)
    assert walk.pack_key(
        st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_mode, st.st_uid, st.st_gid
    ) == model.fast_key(st)


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    root = tmp_path / "usr"
    for d in range(12):
        for s in range(3):
            folder = root / f"d{d:02}" / f"s{s}"
            folder.mkdir(parents=True)
            for f in range(8):
                (folder / f"f{f}").write_bytes(f"{d}-{s}-{f}".encode() * (f + 1))
            os.symlink("f0", folder / "link")
    (root / "top-file").write_bytes(b"at the root")
    (root / "cache").mkdir()
    (root / "cache" / "x.pyc").write_bytes(b"excluded")
    return root


def tamper(root: Path) -> set[tuple[str, str, bool]]:
    """The changes, as (path, kind, mtime_restored) the check must find."""
    f = root / "d00/s0/f1"
    f.write_bytes(b"new content")
    g = root / "d03/s1/f2"
    st = g.stat()
    g.write_bytes(b"hidden change")
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(root / "d05/s2/f3", 0o700)
    (root / "d07/s0/f4").unlink()
    (root / "d09/s1/new-tool").write_bytes(b"\x7fELF new")
    (root / "d11/s2/link").unlink()
    os.symlink("f5", root / "d11/s2/link")
    (root / "d02/s2/f6").unlink()
    os.symlink("f0", root / "d02/s2/f6")
    (root / "top-file").write_bytes(b"changed at the root")
    (root / "cache" / "y.pyc").write_bytes(b"excluded too")
    return {
        (str(f), "modified", False),
        (str(g), "modified", True),
        (str(root / "d05/s2/f3"), "permissions", False),
        (str(root / "d07/s0/f4"), "removed", False),
        (str(root / "d09/s1/new-tool"), "added", False),
        (str(root / "d11/s2/link"), "modified", False),
        (str(root / "d02/s2/f6"), "modified", False),
        (str(root / "top-file"), "modified", False),
    }


def found(result) -> set[tuple[str, str, bool]]:
    return {(c.path, c.change, c.mtime_restored) for c in result.changes}


def test_parallel_walk_finds_exactly_what_one_process_finds(big_tree, tmp_path, sink, monkeypatch):
    engine = make_engine(big_tree, tmp_path, sink, workers=2, exclude=("*/cache/*",))
    engine.build_baseline()
    monkeypatch.setattr(walk, "PARALLEL_MIN_FILES", 0)
    unchanged = engine.check()
    assert unchanged.changes == [] and unchanged.files == 12 * 3 * 9 + 1
    expected = tamper(big_tree)
    started = []
    real_init = walk._WalkWorker.__init__

    def counting_init(self, exclude):
        real_init(self, exclude)
        started.append(self.process.pid)

    monkeypatch.setattr(walk._WalkWorker, "__init__", counting_init)
    parallel = engine.check()
    assert len(started) == 2, "the parallel walk did not run"
    monkeypatch.setattr(walk, "PARALLEL_MIN_FILES", 10**9)
    one_process = engine.check()
    assert found(parallel) == found(one_process) == expected
    assert parallel.files == one_process.files
    assert not [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid in started and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]


def test_a_worker_dying_mid_walk_loses_nothing(big_tree, tmp_path, sink, monkeypatch):
    engine = make_engine(big_tree, tmp_path, sink, workers=2, exclude=("*/cache/*",))
    engine.build_baseline()
    expected = tamper(big_tree)
    monkeypatch.setattr(walk, "PARALLEL_MIN_FILES", 0)
    real_give = walk._WalkWorker.give
    killed = []

    def give_then_die(self, folder):
        real_give(self, folder)
        if not killed:  # the first worker dies with its first folder
            self.process.kill()
            killed.append(self.process.pid)

    monkeypatch.setattr(walk._WalkWorker, "give", give_then_die)
    result = engine.check()
    assert killed
    assert found(result) == expected
    assert result.files == 12 * 3 * 9 + 1 - 1 + 1  # one removed, one added
    # Only the walk's own workers count: other areas' session fixtures (a clamd) are children too.
    assert not [
        p for p in psutil.Process().children(recursive=True)
        if "hashworker" in " ".join(_cmdline(p)) and p.status() != psutil.STATUS_ZOMBIE
    ]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []
