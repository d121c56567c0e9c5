"""The weekly full scan through the collector, against a real clamd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.antivirus.checkpoint import Checkpoint
from agent.antivirus.service import AntivirusService, ScanTuning
from agent.collectors.antivirus import AntivirusCollector
from agent.collectors.base import CollectorContext
from policy_server.protocol import AntivirusSection, CollectorState, PolicyBundle
from tests.support.clamd import EICAR

REPO = Path(__file__).resolve().parents[2]
SATURDAY_NOON = datetime.fromisoformat("2026-11-21T12:00:00+06:00")  # inside the default window
MONDAY_EVENING = datetime.fromisoformat("2026-11-23T18:00:00+06:00")  # after a missed window


def make_collector(sink, state, clamd, roots, *, now, nobody=True, **kwargs):
    bundle = PolicyBundle(
        antivirus=AntivirusSection(scan_paths=[str(r) for r in roots], exclude=[], download_dirs=[])
    )
    ctx = CollectorContext(sink=sink, state_dir=state, policy=bundle, seat="lab1-07")
    clock = {"now": now}
    collector = AntivirusCollector(
        ctx,
        clamd_socket=clamd.socket_path,
        clock=lambda: clock["now"],
        nobody_at_console=lambda: nobody,
        mounts_file="/dev/null",
        tuning=ScanTuning(progress_every_s=0, checkpoint_every_s=0),
        **kwargs,
    )
    return collector, clock


def test_weekly_scan_finds_quarantines_and_proves(clamd, sink, tmp_path, infected_tree):
    state = tmp_path / "state"
    collector, _ = make_collector(
        sink, state, clamd, [infected_tree["root"]], now=SATURDAY_NOON, nobody=False
    )
    decision = collector.tick()
    assert decision.run and not decision.catch_up

    started = sink.of_type("av.scan.started")
    assert len(started) == 1 and started[0].data["kind"] == "full" and not started[0].data["resumed"]
    threats = sink.of_type("av.threat")
    assert {t.data["path"] for t in threats} == infected_tree["infected"]
    assert all(t.data["quarantined"] and t.data["sha256"] for t in threats)
    assert all(t.clauses == ["000 §4.2", "000 §5.4"] for t in threats)
    completed = sink.of_type("av.scan.completed")[-1].data
    assert completed["files"] == len(infected_tree["files"])
    assert completed["threats"] == len(infected_tree["infected"])
    assert completed["bytes"] == infected_tree["bytes"]
    assert completed["signature_version"] == "424242"
    assert sink.of_type("av.scan.progress"), "progress events while scanning"
    # the infected files are gone, the clean ones stay
    for path in infected_tree["infected"]:
        assert not os.path.exists(path)
    assert os.path.exists(infected_tree["root"] / "games" / "readme.txt")
    # a second round the same week does nothing: the proof is there
    assert not collector.tick().run
    assert len(sink.of_type("av.scan.completed")) == 1
    assert not Checkpoint.load(collector.folder)


def test_missed_window_catches_up_when_idle(clamd, sink, tmp_path, infected_tree):
    state = tmp_path / "state"
    collector, _ = make_collector(
        sink, state, clamd, [infected_tree["root"]], now=MONDAY_EVENING, nobody=False
    )
    busy = collector.tick()
    assert not busy.run and busy.catch_up
    assert not sink.of_type("av.scan.started")
    collector.nobody_at_console = lambda: True
    idle = collector.tick()
    assert idle.run and idle.catch_up
    assert sink.of_type("av.scan.started")[0].data["catch_up"] is True
    assert sink.of_type("av.scan.completed")[0].data["threats"] == len(infected_tree["infected"])


def test_lesson_in_the_room_pauses_the_scan(clamd, sink, tmp_path, infected_tree):
    from policy_server.protocol import Lesson

    state = tmp_path / "state"
    collector, _ = make_collector(sink, state, clamd, [infected_tree["root"]], now=SATURDAY_NOON)
    collector.ctx.room = "lab1"
    collector.clock = lambda: datetime.now(UTC)
    lesson = Lesson(
        id="l1",
        room="lab1",
        teacher="t",
        starts_at=datetime.now(UTC),
        ends_at=datetime.now(UTC).replace(year=2099),
    )
    collector.ctx.policy = collector.ctx.policy.model_copy(update={"lessons": [lesson]})
    service = collector.service
    assert service.full_scan(collector.ctx.policy.antivirus, should_stop=collector._should_pause) is None
    assert Checkpoint.load(collector.folder) is not None, "a paused scan keeps its checkpoint"


KILLED_SCAN = """
import sys, time
from pathlib import Path
import agent.antivirus.engine as engine
from agent.antivirus.clamd import ClamdClient
from agent.antivirus.service import AntivirusService, ScanTuning
from policy_server.protocol import AntivirusSection

real_open = engine.open_for_scan
def slow_open(path):
    time.sleep(0.01)  # slow enough that the test can kill it half-way
    return real_open(path)
engine.open_for_scan = slow_open
socket_path, state, root = sys.argv[1:4]
service = AntivirusService(ClamdClient(socket_path), Path(state), lambda t, d: None,
    tuning=ScanTuning(sessions=1, window=4, checkpoint_every_s=0.05, low_priority=False))
service.full_scan(AntivirusSection(scan_paths=[root], exclude=[]))
print("finished", flush=True)
"""


def test_killed_scan_resumes_from_checkpoint(clamd, sink, tmp_path):
    root = tmp_path / "big"
    for d in range(10):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (root / f"d{d}" / f"f{f:03}").write_bytes(b"clean %d %d\n" % (d, f))
    (root / "d9" / "zz-eicar.com").write_bytes(EICAR)
    total = 1001
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCAN, str(clamd.socket_path), str(state), str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    done_before = 0
    while time.monotonic() < deadline:
        checkpoint = Checkpoint.load(state)
        if checkpoint and checkpoint.files >= 200:
            proc.send_signal(signal.SIGKILL)  # like a power cut: no clean-up at all
            proc.wait()
            done_before = Checkpoint.load(state).files
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the scan did not write a checkpoint")
    assert 200 <= done_before < total, "killed half-way"

    service = AntivirusService(
        __import__("agent.antivirus.clamd", fromlist=["ClamdClient"]).ClamdClient(clamd.socket_path),
        state,
        sink.emit,
        tuning=ScanTuning(low_priority=False),
    )
    scanned_now = []
    original = service._engine

    def counting_engine():
        engine = original()
        run = engine.run

        def run_counting(entries, **kw):
            entries = list(entries)
            scanned_now.extend(e.path for e in entries)
            return run(entries, **kw)

        engine.run = run_counting
        return engine

    service._engine = counting_engine
    completed = service.full_scan(AntivirusSection(scan_paths=[str(root)], exclude=[]))
    assert completed is not None and completed.resumed
    assert sink.of_type("av.scan.started")[0].data["resumed"] is True
    assert completed.files == total and completed.threats == 1
    assert len(scanned_now) == total - done_before, "only the rest was scanned again"
    last = json.loads((state / "last-full-scan.json").read_text())
    assert last["scan_id"] == completed.scan_id and not Checkpoint.load(state)


def test_stale_signatures_and_dead_clamd_are_health_problems(tmp_path, sink):
    from datetime import timedelta

    from tests.support.clamd import ClamdProcess

    old = ClamdProcess(tmp_path / "clamd-old", built_at=datetime.now(UTC) - timedelta(days=30)).start()
    try:
        ctx = CollectorContext(sink=sink, state_dir=tmp_path / "state")
        collector = AntivirusCollector(ctx, clamd_socket=old.socket_path, mounts_file="/dev/null")
        health = collector.check_health()
        assert health.problem == "signatures_stale" and health.signature_age_days > 29
        assert collector.health().state == CollectorState.degraded
        old.kill()
        assert collector.check_health().problem == "clamd_unreachable"
        assert collector.health().state == CollectorState.failed
        problems = [e.data["problem"] for e in sink.of_type("av.health")]
        assert problems == ["signatures_stale", "clamd_unreachable"]
        assert collector.tick() is None, "no scan is attempted while clamd is down"
    finally:
        old.stop()


def test_download_and_media_scans(clamd, sink, tmp_path):
    downloads = tmp_path / "home" / "aibek" / "Downloads"
    downloads.mkdir(parents=True)
    media_root = tmp_path / "media"
    stick = media_root / "aibek" / "STICK"
    (stick / "photos").mkdir(parents=True)
    (stick / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (stick / "setup.exe").write_bytes(EICAR)
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n")
    bundle = PolicyBundle(
        antivirus=AntivirusSection(download_dirs=[str(tmp_path / "home" / "*" / "Downloads")])
    )
    ctx = CollectorContext(sink=sink, state_dir=tmp_path / "state", policy=bundle)
    collector = AntivirusCollector(
        ctx,
        clamd_socket=clamd.socket_path,
        tick_s=3600,
        mounts_file=str(mounts),
        media_poll_s=0.2,
        nobody_at_console=lambda: False,
        clock=lambda: MONDAY_EVENING,
    )
    collector.media_watcher.prefixes = (str(media_root) + "/",)
    collector.start()
    try:
        assert collector.download_watcher.watching.wait(5)  # (it looks at the folders on its own thread)
        # a browser writes under a temporary name, then renames
        part = downloads / "game.exe.part"
        part.write_bytes(EICAR)
        part.rename(downloads / "game.exe")
        threat = sink.wait_for("av.threat", timeout=15)[0].data
        assert threat["path"] == str(downloads / "game.exe") and threat["source"] == "download"
        assert not (downloads / "game.exe").exists()
        # the stick is mounted
        mounts.write_text(mounts.read_text() + f"/dev/sdb1 {stick} vfat rw 0 0\n")
        from agent.antivirus import media

        media.announce_storage("1-1")
        threats = sink.wait_for("av.threat", count=2, timeout=15)
        assert threats[1].data["source"] == "media" and threats[1].data["path"] == str(stick / "setup.exe")
        completed = [e.data for e in sink.wait_for("av.scan.completed", count=2, timeout=15)]
        media_scan = [c for c in completed if c["kind"] == "media"][0]
        assert media_scan["files"] == 2 and media_scan["threats"] == 1
        assert (stick / "photos" / "cat.jpg").exists()
    finally:
        collector.stop()


@pytest.mark.root
def test_really_mounted_stick_is_scanned(clamd, sink, tmp_path):
    """A real ext4 image on a loop device, mounted under a media folder (needs root and /dev/loop*)."""
    content = tmp_path / "content"
    (content / "homework").mkdir(parents=True)
    (content / "homework" / "essay.txt").write_text("my essay\n")
    (content / "autorun.exe").write_bytes(EICAR)
    image = tmp_path / "stick.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content), str(image)], check=True)
    media_root = tmp_path / "media"
    point = media_root / "aibek" / "STICK"
    point.mkdir(parents=True)
    ctx = CollectorContext(sink=sink, state_dir=tmp_path / "state",
                           policy=PolicyBundle(antivirus=AntivirusSection(download_dirs=[])))
    collector = AntivirusCollector(ctx, clamd_socket=clamd.socket_path, tick_s=3600, media_poll_s=0.2,
                                   nobody_at_console=lambda: False, clock=lambda: MONDAY_EVENING)
    collector.media_watcher.prefixes = (str(media_root) + "/",)
    collector.start()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(point)], capture_output=True, text=True)
    try:
        if mounted.returncode != 0:
            pytest.skip(f"this machine cannot loop-mount ({mounted.stderr.strip()}); "
                        "test_download_and_media_scans covers the logic with a mount table file")
        threat = sink.wait_for("av.threat", timeout=15)[0].data
        assert threat["path"] == str(point / "autorun.exe") and threat["source"] == "media"
        assert threat["quarantined"] and not (point / "autorun.exe").exists()
        assert (point / "homework" / "essay.txt").exists()
    finally:
        collector.stop()
        if mounted.returncode == 0:
            subprocess.run(["umount", str(point)], check=False)
