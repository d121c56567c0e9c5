"""Idle locking against a real X server (Xvfb): the helper process reads the idle
time from the XScreenSaver extension, the root-side collector hands it the policy's
timeout over the real Unix socket, and the lock command is a script that records
its calls."""

from __future__ import annotations

import time

from agent.platform.idle import XScreenSaverIdleSource
from policy_server.rules import RuleInput, evaluate, load_all_rules
from tests.idle.conftest import policy, start_helper, stop_helper, wait_until, x_input


def lock_calls(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_idle_time_is_read_from_the_x_server_and_reset_by_input(xvfb):
    source = XScreenSaverIdleSource(xvfb)
    try:
        x_input(xvfb)
        assert source.idle_seconds() < 0.5
        time.sleep(1.2)
        idle = source.idle_seconds()
        assert 1.0 <= idle < 5.0
        x_input(xvfb)
        assert source.idle_seconds() < 0.5
    finally:
        source.close()


def test_session_is_locked_after_the_group_timeout(xvfb, idle_collector, lock_script):
    script, log = lock_script
    idle_collector.on_policy(policy(student=2))
    x_input(xvfb)
    helper = start_helper(xvfb, idle_collector.socket_path, script)
    try:
        [event] = idle_collector.sink.wait_for("idle.locked", timeout=10)
    finally:
        output = stop_helper(helper)
    assert lock_calls(log) == 1, output
    assert event.data["reason"] == "idle"
    assert event.data["timeout_s"] == 2
    assert event.data["idle_s"] >= 2
    assert event.subject.os_user == "root" and event.subject.seat == "lab1-07"


def test_input_resets_the_timer_and_prevents_the_lock(xvfb, idle_collector, lock_script):
    script, log = lock_script
    idle_collector.on_policy(policy(student=2))
    x_input(xvfb)
    helper = start_helper(xvfb, idle_collector.socket_path, script)
    try:
        # a user who keeps working: input every 0.7 s for 4 s, twice the timeout
        for _ in range(6):
            time.sleep(0.7)
            x_input(xvfb)
        assert lock_calls(log) == 0
        # the user walks away: the lock follows after the timeout, once
        assert wait_until(lambda: lock_calls(log) == 1, timeout=8)
        time.sleep(1.0)
        assert lock_calls(log) == 1, "a locked, still idle session must not be locked again and again"
        # back, and away again: locked a second time
        x_input(xvfb)
        assert wait_until(lambda: lock_calls(log) == 2, timeout=8)
        # the helper reports each lock after the lock command returns: wait for the
        # report rather than stopping the helper between the two
        assert len(idle_collector.sink.wait_for("idle.locked", count=2, timeout=5)) == 2
    finally:
        stop_helper(helper)
    assert len(idle_collector.sink.of_type("idle.locked")) == 2


def test_a_lock_that_fails_becomes_an_incident(xvfb, idle_collector, lock_script):
    script, log = lock_script
    log.with_name(log.name + ".rc").write_text("3")
    idle_collector.on_policy(policy(student=1))
    x_input(xvfb)
    helper = start_helper(xvfb, idle_collector.socket_path, script)
    try:
        [event] = idle_collector.sink.wait_for("idle.lock_failed", timeout=10)
    finally:
        stop_helper(helper)
    assert "exited with 3" in event.data["error"] and "screen locker crashed" in event.data["error"]
    assert event.clauses == ["000 §6.4", "000 §6.8"]
    assert idle_collector.sink.of_type("idle.locked") == []

    load_all_rules()
    drafts = evaluate(RuleInput(event_id=str(event.id), type=event.type, agent_id="agent-7",
                                occurred_at=event.occurred_at, data=event.data,
                                os_user=event.subject.os_user, seat=event.subject.seat))
    [draft] = [d for d in drafts if d.rule == "idle.lock_failed"]
    assert draft.severity == "medium" and "000 §6.4" in draft.clauses


def test_isuo_session_shortens_the_timeout_and_its_end_locks_at_once(xvfb, idle_collector, lock_script):
    script, log = lock_script
    idle_collector.on_policy(policy(student=600, isuo=2))
    x_input(xvfb)
    helper = start_helper(xvfb, idle_collector.socket_path, script)
    try:
        assert wait_until(lambda: idle_collector.health().detail.startswith("1 session helper"), timeout=5)
        idle_collector.isuo_event("root", "start")
        [during] = idle_collector.sink.wait_for("idle.locked", timeout=8)
        assert during.data["reason"] == "isuo_idle" and during.data["timeout_s"] == 2

        # the user comes back and keeps working; the ISUO session ends: lock at once, not after 600 s
        for _ in range(3):
            x_input(xvfb)
            time.sleep(0.3)
        idle_collector.isuo_event("root", "end")
        x_input(xvfb)
        events = idle_collector.sink.wait_for("idle.locked", count=2, timeout=5)
    finally:
        stop_helper(helper)
    assert events[1].data["reason"] == "isuo_end"
    assert events[1].data["idle_s"] < 2
    assert lock_calls(log) == 2
    assert idle_collector.sink.of_type("idle.lock_failed") == []
