"""The parallel hasher gives exactly hashlib's answers, in order, on both cores."""

from __future__ import annotations

import hashlib
import os

from agent.integrity import hasher


def test_pool_and_single_process_match_hashlib(tmp_path, monkeypatch):
    paths, sizes = [], []
    for i in range(300):
        body = os.urandom(i * 97 % 70000)
        (tmp_path / f"f{i}").write_bytes(body)
        paths.append(str(tmp_path / f"f{i}"))
        sizes.append(len(body))
    paths.append(str(tmp_path / "missing"))
    sizes.append(0)
    expected = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths[:-1]] + [None]
    assert hasher.hash_paths(paths, sizes, workers=1) == expected
    monkeypatch.setattr(hasher, "_POOL_MIN_FILES", 10)  # force the process pool on a small job
    monkeypatch.setattr(hasher, "_BATCH_FILES", 7)
    seen = []
    assert hasher.hash_paths(paths, sizes, workers=2, progress=lambda f, b: seen.append((f, b))) == expected
    assert seen[-1] == (len(paths), sum(sizes))
