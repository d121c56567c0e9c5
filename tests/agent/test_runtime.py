"""The runtime: collectors loaded (or reported failed), heartbeat, policy to collectors, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.collectors import registry
from agent.collectors.heartbeat import build_heartbeat
from agent.runtime import AgentRuntime
from agent.state import AgentState
from policy_server.protocol import PolicyBundle
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SAMPLES = "tests.agent.sample_collectors"


@pytest.fixture
def sample_registry(monkeypatch):
    for name, cls in {"recording": "Recording", "broken_start": "BrokenStart",
                      "broken_health": "BrokenHealth", "with_uninstall": "WithUninstall",
                      "slow_start": "SlowStart"}.items():
        monkeypatch.setitem(registry.COLLECTORS, name, f"{SAMPLES}:{cls}")
    monkeypatch.setitem(registry.COLLECTORS, "ghost", "tests.agent.no_such_module:Ghost")


def _events(runtime: AgentRuntime) -> list[dict]:
    return [json.loads(e.body) for e in runtime.outbox.peek_batch(1000, max_bytes=10**9)]



@contextmanager
def _one_slow_start(state: AgentState, first: str):
    """A runtime starting `first`, then a collector whose start() returns when the test sets
    `release`; the runtime's start() runs on its own thread (it waits for that collector)."""
    import threading

    from tests.agent import sample_collectors

    release = threading.Event()
    sample_collectors.SlowStart.release = release
    runtime = AgentRuntime(state, collectors=[first, "slow_start"], platform="fake", status_interval_s=5.0)
    starter = threading.Thread(target=runtime.start)
    starter.start()
    try:
        yield runtime, release
    finally:
        release.set()
        starter.join(10)
        runtime.stop()


def test_the_status_is_written_while_a_collector_is_still_starting(state: AgentState,
                                                                   sample_registry) -> None:
    """A collector slow to start (the download watcher once walked a /tmp of 146,000 folders)
    must not leave the agent without a status: the supervisor and the tests would call it dead."""
    with _one_slow_start(state, "recording") as (runtime, release):
        assert wait_until(lambda: (state.read_status() or {}).get("starting") == ["slow_start"])
        status = state.read_status()
        assert status["collectors"]["slow_start"] == {"state": "degraded", "detail": "starting",
                                                      "since": None}
        release.set()
        # written at once when the collectors have started, not at the next round 5 s later
        assert wait_until(lambda: state.read_status()["starting"] == [], timeout=1.0)
        assert state.read_status()["collectors"]["slow_start"]["state"] == "ok"


def test_the_first_heartbeat_waits_for_the_other_collectors_to_start(state: AgentState,
                                                                     sample_registry) -> None:
    """Sent at once, the first beat reported a collector still starting as "degraded", and the
    fleet page showed a seat just switched on as degraded until the next beat (a minute)."""
    with _one_slow_start(state, "heartbeat") as (runtime, release):
        assert wait_until(lambda: (state.read_status() or {}).get("starting") == ["slow_start"])
        time.sleep(0.3)
        assert not [e for e in _events(runtime) if e["type"] == "agent.heartbeat"]  # not yet
        release.set()
        assert wait_until(lambda: any(e["type"] == "agent.heartbeat" for e in _events(runtime)))
        beat = next(e for e in _events(runtime) if e["type"] == "agent.heartbeat")
        assert beat["data"]["collectors"]["slow_start"]["state"] == "ok"


def test_failing_collectors_are_reported_and_the_rest_runs(state: AgentState, sample_registry) -> None:
    runtime = AgentRuntime(state, collectors=["heartbeat", "recording", "broken_start", "broken_health",
                                              "ghost"], platform="fake", status_interval_s=0.2)
    runtime.start()
    try:
        assert wait_until(lambda: any(e["type"] == "agent.heartbeat" for e in _events(runtime)))
        health = runtime.collector_health()
        assert health["recording"].state == "ok" and health["recording"].detail == "platform fake"
        assert health["broken_start"].state == "failed"
        assert "clamd socket missing" in health["broken_start"].detail
        assert health["broken_health"].state == "failed"
        assert "ZeroDivisionError" in health["broken_health"].detail
        assert health["ghost"].state == "failed" and "no_such_module" in health["ghost"].detail
        beat = next(e for e in _events(runtime) if e["type"] == "agent.heartbeat")
        assert set(beat["data"]["collectors"]) == {"recording", "broken_start", "broken_health", "ghost"}
        assert any(e["type"] == "web.report" for e in _events(runtime))  # the collector's own event
        assert wait_until(lambda: (state.read_status() or {}).get("starting") == [])
        assert wait_until(lambda: state.read_status()["outbox"]["depth"] >= 2)  # the heartbeat, the report
        status = state.read_status()
        assert status["collectors"]["ghost"]["state"] == "failed"
        assert status["running"] and status["enrolled"] is False
    finally:
        runtime.stop()
    assert runtime.slots["recording"].collector.stopped
    assert state.read_status()["running"] is False


def test_offline_start_uses_last_good_bundle_and_new_bundles_reach_collectors(state, sample_registry) -> None:
    state.save_policy(PolicyBundle(version=7).sealed())
    runtime = AgentRuntime(state, collectors=["recording"], platform="fake")
    runtime.start()
    try:
        collector = runtime.slots["recording"].collector
        assert collector.policies == [7] and runtime.policy_version() == 7
        runtime.policy.apply_raw(PolicyBundle(version=8).sealed().model_dump(mode="json"))
        assert collector.policies == [7, 8] and collector.ctx.policy.version == 8
        assert state.load_policy().version == 8
    finally:
        runtime.stop()


def test_bad_arguments_are_explained(state) -> None:
    with pytest.raises(ValueError, match="unknown platform"):
        AgentRuntime(state, platform="windows95")
    with pytest.raises(ValueError, match="unknown collector 'nope'"):
        AgentRuntime(state, collectors=["nope"], platform="fake")


def test_heartbeat_content_from_runtime_view(state, sample_registry) -> None:
    runtime = AgentRuntime(state, collectors=["recording"], platform="fake")
    runtime.start()
    try:
        beat = build_heartbeat(runtime)
        assert beat.outbox_depth == runtime.outbox.depth() >= 1
        assert beat.collectors["recording"].state == "ok" and beat.policy_version is None
        assert beat.uptime_s >= 0
    finally:
        runtime.stop()


def _run_until_status_then_stop(state_dir: Path, collectors: str) -> str:
    """`kalkan-agent run --collectors COLLECTORS` until it writes its status, then SIGTERM; its
    log (stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--state-dir", str(state_dir), "--platform", "fake",
         "--collectors", collectors], cwd=REPO, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert wait_until(lambda: (state_dir / "status.json").exists(), 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.stderr.read()


def test_sigterm_stops_the_agent_cleanly(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    log = _run_until_status_then_stop(state_dir, "heartbeat")
    status = json.loads((state_dir / "status.json").read_text())
    assert status["running"] is False and status["collectors"]["heartbeat"]["state"] in ("ok", "failed")
    assert "agent stopped" in log


def test_an_empty_collectors_option_runs_none(tmp_path: Path) -> None:
    """`--collectors ""` is none at all, not the configured set: a test's bare agent started every
    collector (antivirus, integrity, the proxy…) and on a loaded machine wrote no status in 30 s."""
    state_dir = tmp_path / "state"
    log = _run_until_status_then_stop(state_dir, "")
    assert json.loads((state_dir / "status.json").read_text())["collectors"] == {}
    assert "collectors none" in log
