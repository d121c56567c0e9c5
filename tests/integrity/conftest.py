"""Fixtures for the integrity tests: a real program tree in tmp, an engine over it,
and a sink that validates events against the wire protocol like the outbox does."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent.integrity import walk
from agent.integrity.config import IntegrityConfig
from agent.integrity.engine import IntegrityEngine
from agent.integrity.packages import DpkgDatabase
from policy_server.protocol import make_event


class Sink:
    """Collects (type, data) after validating each event with protocol.make_event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self._cond = threading.Condition()

    def __call__(self, event_type, data, clauses=None) -> None:
        envelope = make_event(event_type, data, clauses=clauses)
        with self._cond:
            self.events.append((event_type, envelope.data | {"_clauses": envelope.clauses}))
            self._cond.notify_all()

    def emit(self, event_type, data, *, subject=None, clauses=None) -> str:  # the EventSink protocol
        self(event_type, data, clauses)
        return "id"

    def of(self, event_type: str) -> list[dict]:
        with self._cond:
            return [d for t, d in self.events if t == event_type]

    def changes(self) -> dict[str, dict]:
        return {d["path"]: d for d in self.of("integrity.changed")}

    def wait_for(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [d for t, d in self.events if predicate(t, d)]
                if found:
                    return found
                if time.monotonic() > deadline:
                    raise AssertionError(f"no matching event within {timeout} s; got {self.events}")
                self._cond.wait(0.1)

    def clear(self) -> None:
        with self._cond:
            self.events.clear()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small program folder: binaries, a library folder, a symlink."""
    root = tmp_path / "opt" / "app"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    for name, body in (
        ("bin/editor", b"\x7fELF editor v1"),
        ("bin/viewer", b"\x7fELF viewer v1"),
        ("lib/libcore.so", b"core" * 5000),
        ("lib/data.txt", b"plain data"),
    ):
        (root / name).write_bytes(body)
    os.chmod(root / "bin/editor", 0o755)
    os.chmod(root / "bin/viewer", 0o755)
    os.symlink("libcore.so", root / "lib/libcore.so.1")
    return root


def make_engine(tree: Path, tmp_path: Path, sink: Sink, *, workers: int = 1, **config) -> IntegrityEngine:
    cfg = IntegrityConfig(paths=(str(tree),), **config)
    return IntegrityEngine(
        cfg,
        state_dir=tmp_path / "state",
        key_dir=tmp_path / "key",
        emit=sink,
        dpkg=DpkgDatabase(tmp_path / "no-dpkg"),
        workers=workers,
    )


@pytest.fixture(params=["one-process", "parallel-walk"])
def engine(request, tree: Path, tmp_path: Path, sink: Sink, monkeypatch) -> IntegrityEngine:
    """Every engine test twice: the fast check walked in this process, and shared out
    between walking workers (agent.integrity.walk; normally only for big trees)."""
    if request.param == "parallel-walk":
        monkeypatch.setattr(walk, "PARALLEL_MIN_FILES", 0)
        monkeypatch.setattr(walk, "_UNITS_PER_WORKER", 0)  # the workers walk even this small tree
        return make_engine(tree, tmp_path, sink, workers=2)
    return make_engine(tree, tmp_path, sink)
