"""clamd absent or dead: the collector waits with a growing pause, parks new files quietly,
and scans them once clamd is back (benchmarks/agent: it used to spin at 32 % of a core)."""

from __future__ import annotations

import logging
import time
from datetime import datetime

import pytest

from agent.antivirus.waiting import Backoff, ParkedScans
from agent.collectors.antivirus import AntivirusCollector
from agent.collectors.base import CollectorContext
from policy_server.protocol import AntivirusSection, CollectorState, PolicyBundle
from tests.support.clamd import EICAR, ClamdProcess


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(first_s=1, max_s=30)
    assert [backoff.next_pause() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_pause() == 1
    with pytest.raises(ValueError, match="first_s <= max_s"):
        Backoff(first_s=5, max_s=1)


def test_parked_scans_keep_each_job_once_and_drop_the_oldest_beyond_the_limit():
    parked: ParkedScans[str] = ParkedScans(limit=3)
    for job in ["a", "b", "a", "c", "d"]:
        parked.park(job)
    assert parked.release() == (["a", "c", "d"], 1)  # "b" was the oldest once "a" came again
    assert parked.release() == ([], 0) and len(parked) == 0


class CountingConnect:
    """Counts every connection the collector's clamd client tries."""

    def __init__(self, client) -> None:
        self.attempts = 0
        self._connect = client.connect
        client.connect = self

    def __call__(self):
        self.attempts += 1
        return self._connect()


# Outside the weekly window (Saturday 10:00–16:00 by default): on the wall clock, a run on a
# Saturday morning in Bishkek started the full scan of / as soon as clamd was back, and the
# parked downloads waited behind it.
WEDNESDAY_NOON = datetime.fromisoformat("2026-11-25T12:00:00+06:00")


def test_without_clamd_files_are_parked_quietly_and_scanned_once_it_is_back(tmp_path, sink, caplog):
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    state = downloads / ".agent-state"  # the agent's own files never become scans
    clamd = ClamdProcess(tmp_path / "clamd")  # configured, not started yet
    bundle = PolicyBundle(antivirus=AntivirusSection(download_dirs=[str(downloads)]))
    ctx = CollectorContext(sink=sink, state_dir=state, policy=bundle)
    collector = AntivirusCollector(ctx, clamd_socket=clamd.socket_path, tick_s=2.0, first_retry_s=0.25,
                                   mounts_file="/dev/null", nobody_at_console=lambda: False,
                                   clock=lambda: WEDNESDAY_NOON)
    connects = CountingConnect(collector.client)
    caplog.set_level(logging.INFO, logger="kalkan.agent")
    collector.start()
    try:
        assert collector.download_watcher.watching.wait(5)  # (it looks at the folders on its own thread)
        names = [f"lesson-{i:02}.txt" for i in range(40)]
        for name in names:
            (downloads / name).write_text(f"homework {name}\n")
        (downloads / "game.exe").write_bytes(EICAR)
        state.mkdir(parents=True, exist_ok=True)
        (state / "status.json").write_text("{}")
        deadline = time.monotonic() + 15
        while len(collector.parked) < 41 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.5)  # a few seconds of clamd being down, with the files waiting

        assert len(collector.parked) == 41, "each new download waits for clamd, the agent's own file does not"
        # the old code tried clamd once per file (41+); now only the backed-off health probes connect
        assert connects.attempts <= 8, f"{connects.attempts} connection attempts while clamd was down"
        assert sink.of_type("av.scan.started") == [], "no scan starts (and is left unfinished) without clamd"
        assert [e.data["problem"] for e in sink.of_type("av.health")] == ["clamd_missing"]
        assert collector.health().state == CollectorState.failed
        down_lines = [r for r in caplog.records if r.name == "kalkan.agent" and r.levelno >= logging.WARNING]
        assert len(down_lines) == 1 and "clamd_missing" in down_lines[0].getMessage()

        clamd.start()
        threat = sink.wait_for("av.threat", timeout=30)[0].data
        assert threat["path"] == str(downloads / "game.exe") and threat["quarantined"]
        completed = sink.wait_for("av.scan.completed", count=41, timeout=60)
        assert sorted(e.data["kind"] for e in completed) == ["download"] * 41
        back = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
        assert back == ["clamd answers again: scanning 41 file(s) and media that arrived while it was down"]
        assert collector.health().state == CollectorState.ok
        assert len(collector.parked) == 0
    finally:
        collector.stop()
        clamd.stop()
