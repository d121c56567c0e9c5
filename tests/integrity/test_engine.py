"""Integrity on a real tree: each kind of change, fast and full checks, acceptance, tampering."""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime

import pytest

from agent.integrity.config import IntegrityConfig, IntegrityConfigError
from agent.integrity.store import BaselineTampered
from policy_server.protocol import AcceptedChange, IntegritySection
from tests.integrity.conftest import make_engine


def test_added_modified_mtime_restored_removed_and_permissions_are_told_apart(engine, tree, sink):
    engine.build_baseline()
    assert sink.of("integrity.baseline")[0]["files"] == 5
    editor, viewer = tree / "bin/editor", tree / "bin/viewer"
    st = os.stat(editor)
    editor.write_bytes(b"\x7fELF editor trojaned")  # same length? no matter: mtime is set back below
    os.utime(editor, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -d` style restore
    viewer.write_bytes(b"\x7fELF viewer v2")
    os.chmod(tree / "lib/data.txt", 0o666)
    (tree / "lib/libcore.so").unlink()
    (tree / "bin/newtool").write_bytes(b"#!/bin/sh\necho hi\n")

    result = engine.check()
    kinds = {c.path: c.change for c in result.changes}
    assert kinds == {
        str(editor): "modified",
        str(viewer): "modified",
        str(tree / "lib/data.txt"): "permissions",
        str(tree / "lib/libcore.so"): "removed",
        str(tree / "bin/newtool"): "added",
    }
    events = sink.changes()
    assert events[str(editor)]["mtime_restored"] is True  # ctime gave it away
    assert events[str(viewer)]["mtime_restored"] is False
    assert events[str(tree / "lib/data.txt")]["old_mode"] == 0o644
    assert events[str(tree / "lib/data.txt")]["new_mode"] == 0o666
    assert all(e["detected_by"] == "fast_check" and not e["by_package_manager"] for e in events.values())
    # A pending change is reported once, not on every check.
    sink.clear()
    again = engine.check()
    assert len(again.changes) == 5 and sink.of("integrity.changed") == []


def test_fast_path_reads_nothing_on_an_unchanged_tree_and_full_check_rereads_everything(engine, tree):
    engine.build_baseline()
    fast = engine.check()
    assert (fast.hashed_files, fast.reused, fast.changes) == (0, 5, [])  # 4 files + 1 symlink
    full = engine.check(full=True)
    assert full.hashed_files == 4 and full.changes == []


def test_copy_over_itself_is_not_a_change_and_refreshes_the_cache(engine, tree, sink):
    base = engine.build_baseline()
    shutil.copy2(tree / "bin/editor", tree / "bin/editor.tmp")
    os.replace(tree / "bin/editor.tmp", tree / "bin/editor")  # new inode, same content and mode
    first = engine.check()
    assert first.changes == [] and first.hashed_files == 1
    assert first.baseline.digest == base.digest  # the protected content did not change
    assert engine.check().hashed_files == 0  # cache refreshed: the fast path vouches again


def test_full_check_catches_a_change_that_kept_all_metadata(engine, tree, sink):
    """User space cannot keep ctime on a content change (only a clock or raw-disk edit can),
    so the baseline is made to believe the new metadata instead: the fast path then trusts
    it, and only the full re-hash, which ignores metadata, finds the change."""
    base = engine.build_baseline()
    viewer = tree / "bin/viewer"
    viewer.write_bytes(b"\x7fELF viewer evil")
    stale = base.fetch([str(viewer)])[str(viewer)]
    from agent.integrity.scan import read_record

    forged = read_record(str(viewer)).with_hash(stale.sha256)  # new metadata, old hash
    engine.store.update(
        base, upserts=[forged], deletes=[], roots=base.roots, exclude=[], reason="test", content_changed=False
    )
    assert engine.check().changes == []  # the fast path is blind to it, as designed
    full = engine.check(full=True)
    assert [(c.path, c.change) for c in full.changes] == [(str(viewer), "modified")]
    assert sink.changes()[str(viewer)]["detected_by"] == "full_check"


def test_an_accepted_change_stops_being_reported_and_moves_the_baseline(engine, tree, sink):
    base = engine.build_baseline()
    (tree / "bin/viewer").write_bytes(b"\x7fELF viewer v2 (teacher's update)")
    os.remove(tree / "lib/data.txt")
    first = engine.check()
    assert len(first.changes) == 2
    new_sha = sink.changes()[str(tree / "bin/viewer")]["new_sha256"]
    now = datetime.now(UTC)
    section = IntegritySection(
        paths=[str(tree)],
        accepted=[
            AcceptedChange(path=str(tree / "bin/viewer"), sha256=new_sha, accepted_at=now, by="admin"),
            AcceptedChange(path=str(tree / "lib/data.txt"), sha256=None, accepted_at=now, by="admin"),
        ],
    )
    engine.config = IntegrityConfig.from_section(section)
    sink.clear()
    moved = engine.check()
    assert moved.changes == [] and sorted(moved.accepted) == [
        str(tree / "bin/viewer"),
        str(tree / "lib/data.txt"),
    ]
    baseline_event = sink.of("integrity.baseline")[-1]
    assert baseline_event["reason"] == "accepted" and baseline_event["seq"] == base.seq + 1
    assert baseline_event["prev_digest"] == base.digest
    # A later, different change of the accepted file is reported again.
    (tree / "bin/viewer").write_bytes(b"\x7fELF viewer v3 (not accepted)")
    assert [c.change for c in engine.check().changes] == ["modified"]


def test_a_tampered_baseline_is_detected(engine, tree, sink, tmp_path):
    engine.build_baseline()
    db_path = engine.store.db_path
    assert oct(os.stat(db_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(db_path.parent).st_mode & 0o777) == "0o700"
    # Someone hides a trojan: rewrites its hash in the baseline.
    (tree / "bin/editor").write_bytes(b"\x7fELF trojan")
    db = sqlite3.connect(db_path)
    from agent.integrity.hasher import hash_file

    db.execute(
        "UPDATE files SET sha256 = ? WHERE path = ?",
        (hash_file(str(tree / "bin/editor")), str(tree / "bin/editor")),
    )
    db.commit()
    db.close()
    with pytest.raises(BaselineTampered, match="edited, replaced or rolled back"):
        engine.check()
    tampered = sink.of("integrity.tampered")
    assert len(tampered) == 1 and tampered[0]["last_digest"] == sink.of("integrity.baseline")[0]["digest"]
    assert "000 §5.6" in tampered[0]["_clauses"]


def test_a_rolled_back_baseline_is_detected(engine, tree, sink, tmp_path):
    engine.build_baseline()
    old_copy = tmp_path / "old.sqlite"
    shutil.copy(engine.store.db_path, old_copy)
    (tree / "bin/newtool").write_bytes(b"x")
    accepted_sha = engine.check().changes[0].new.sha256
    engine.config = IntegrityConfig(paths=(str(tree),), accepted=((str(tree / "bin/newtool"), accepted_sha),))
    engine.check()  # baseline version 1 now
    shutil.copy(old_copy, engine.store.db_path)  # a genuine, older, validly built baseline
    with pytest.raises(BaselineTampered):
        engine.check()


def test_a_missing_key_is_tampering_and_a_rebuild_continues_the_chain(engine, tree, sink, tmp_path):
    first = engine.build_baseline()
    engine.store.key_path.unlink()
    with pytest.raises(BaselineTampered, match="key"):
        engine.check()
    rebuilt = engine.build_baseline(reason="rebuilt_after_tamper")
    assert rebuilt.seq == first.seq + 1 and rebuilt.prev_digest == first.digest
    assert engine.check().changes == []


def test_policy_with_relative_paths_is_refused_with_a_fix():
    with pytest.raises(IntegrityConfigError, match="absolute path"):
        IntegrityConfig.from_section(IntegritySection(paths=["usr/bin"]))


def test_growing_the_watched_paths_takes_new_files_in_silently(tree, tmp_path, sink):
    other = tmp_path / "other"
    other.mkdir()
    (other / "tool").write_bytes(b"tool")
    engine = make_engine(tree, tmp_path, sink)
    engine.build_baseline()
    engine.config = IntegrityConfig(paths=(str(tree), str(other)))
    result = engine.check()
    assert result.changes == [] and result.baseline.roots == [str(tree), str(other)]
    assert sink.of("integrity.baseline")[-1]["reason"] == "paths_changed"
    (other / "tool").write_bytes(b"tool v2")
    assert [c.path for c in engine.check().changes] == [str(other / "tool")]


def test_drop_place_executables_are_reported_and_documents_are_not(engine, tmp_path, sink):
    drop = tmp_path / "Downloads"
    drop.mkdir()
    (drop / "game.exe").write_bytes(b"MZ\x90\x00")
    (drop / "notes.txt").write_bytes(b"homework")
    (drop / "run").write_bytes(b"\x7fELF...")
    assert engine.check_path(str(drop / "game.exe")).change == "added"
    assert engine.check_path(str(drop / "notes.txt")) is None
    assert engine.check_path(str(drop / "run")) is not None
    assert engine.check_path(str(drop / "game.exe")) is None  # reported once
    events = sink.changes()
    assert events[str(drop / "game.exe")]["area"] == "drop"
    assert "000 §6.5" in events[str(drop / "game.exe")]["_clauses"]
