"""The collector end to end: first baseline, real-time watch (inotify), drop places,
a new policy accepting a change."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.collectors.base import CollectorContext
from agent.collectors.integrity import IntegrityCollector
from policy_server.protocol import AcceptedChange, CollectorState, IntegritySection, PolicyBundle


@pytest.fixture
def collector(tree: Path, tmp_path: Path, sink):
    drop = tmp_path / "home/pupil/Downloads"
    drop.mkdir(parents=True)
    bundle = PolicyBundle(
        integrity=IntegritySection(paths=[str(tree)], drop_paths=[str(tmp_path / "home/*/Downloads")])
    )
    ctx = CollectorContext(sink=sink, state_dir=tmp_path / "agent", platform="fake", policy=bundle)
    c = IntegrityCollector(ctx, workers=1, settle_s=0.1)
    c.start()
    deadline = time.monotonic() + 15
    while c.checks < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.checks >= 1, c.health()
    time.sleep(0.3)  # inotify watches are added by the observer thread
    yield c
    c.stop()


def test_watch_reports_changes_in_real_time_and_drops_in_downloads(collector, tree, tmp_path, sink):
    assert sink.of("integrity.baseline")[0]["reason"] == "created"
    assert collector.health().state == CollectorState.ok
    (tree / "bin/viewer").write_bytes(b"\x7fELF patched")
    changed = sink.wait_for(lambda t, d: t == "integrity.changed" and d["path"] == str(tree / "bin/viewer"))
    assert changed[0]["detected_by"] == "watch" and changed[0]["change"] == "modified"
    os.chmod(tree / "lib/data.txt", 0o600)
    perm = sink.wait_for(lambda t, d: t == "integrity.changed" and d["path"].endswith("data.txt"))
    assert perm[0]["change"] == "permissions"
    drop = tmp_path / "home/pupil/Downloads"
    (drop / "essay.docx").write_bytes(b"PK homework")
    (drop / "cheat.exe").write_bytes(b"MZ\x90\x00 game")
    dropped = sink.wait_for(lambda t, d: t == "integrity.changed" and d["area"] == "drop")
    assert dropped[0]["path"] == str(drop / "cheat.exe")
    time.sleep(0.5)
    assert not [d for d in sink.of("integrity.changed") if d["path"].endswith("essay.docx")]


def test_a_new_policy_accepting_the_change_moves_the_baseline(collector, tree, tmp_path, sink):
    target = tree / "bin/editor"
    target.write_bytes(b"\x7fELF editor v2")
    event = sink.wait_for(lambda t, d: t == "integrity.changed" and d["path"] == str(target))[0]
    accepted = AcceptedChange(path=str(target), sha256=event["new_sha256"], accepted_at=datetime.now(UTC))
    # drop_paths as in the fixture: the default would watch the machine's whole /tmp
    bundle = PolicyBundle(version=2, integrity=IntegritySection(
        paths=[str(tree)], drop_paths=[str(tmp_path / "home/*/Downloads")], accepted=[accepted]))
    collector.on_policy(bundle)
    moved = sink.wait_for(lambda t, d: t == "integrity.baseline" and d["reason"] == "accepted")
    assert moved[0]["seq"] == 1
    assert "0 change(s) waiting" in collector.health().detail or collector.checks >= 2
    n = len(sink.of("integrity.changed"))
    collector.on_policy(bundle)  # another check: nothing new is reported
    time.sleep(0.5)
    assert len(sink.of("integrity.changed")) == n
