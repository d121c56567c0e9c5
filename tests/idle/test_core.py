"""The pure core: which timeout applies and when the helper locks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.idle.core import (
    IdleTracker,
    IsuoState,
    SessionPolicy,
    isuo_ended,
    isuo_started,
    policy_for,
    session_locked,
)


def test_group_timeout_applies_outside_isuo():
    p = policy_for(group_timeout_s=600, isuo_timeout_s=120, isuo=IsuoState())
    assert (p.timeout_s, p.reason, p.lock_request) == (600, "idle", None)


def test_shorter_timeout_during_and_after_isuo_until_the_next_lock():
    state = isuo_started(IsuoState())
    assert policy_for(group_timeout_s=600, isuo_timeout_s=120, isuo=state).timeout_s == 120
    # a lock while ISUO is still open keeps the short timeout
    state = session_locked(state, request_id=None)
    assert policy_for(group_timeout_s=600, isuo_timeout_s=120, isuo=state).timeout_s == 120
    state = isuo_ended(state, request_id="r1", lock_on_end=True)
    p = policy_for(group_timeout_s=600, isuo_timeout_s=120, isuo=state)
    assert (p.timeout_s, p.reason, p.lock_request) == (120, "isuo_idle", "r1")
    state = session_locked(state, request_id="r1")
    p = policy_for(group_timeout_s=600, isuo_timeout_s=120, isuo=state)
    assert (p.timeout_s, p.reason, p.lock_request) == (600, "idle", None)


def test_isuo_timeout_never_lengthens_a_short_group_timeout():
    state = isuo_started(IsuoState())
    assert policy_for(group_timeout_s=60, isuo_timeout_s=120, isuo=state).timeout_s == 60


def test_no_lock_request_when_policy_does_not_lock_on_isuo_end():
    state = isuo_ended(isuo_started(IsuoState()), request_id="r1", lock_on_end=False)
    p = policy_for(group_timeout_s=600, isuo_timeout_s=120, isuo=state)
    assert p.lock_request is None and p.timeout_s == 120


def test_a_lock_for_an_older_request_keeps_the_newer_one():
    state = isuo_ended(isuo_started(IsuoState()), request_id="r2", lock_on_end=True)
    assert session_locked(state, request_id="r1").lock_request == "r2"


def test_tracker_locks_once_per_idle_period():
    tracker, policy = IdleTracker(), SessionPolicy(timeout_s=10)
    assert not tracker.step(9.9, policy).lock
    assert tracker.step(10, policy).lock
    assert not tracker.step(11, policy).lock
    assert not tracker.step(500, policy).lock
    assert not tracker.step(0.5, policy).lock  # the user came back
    decision = tracker.step(10.5, policy)
    assert decision.lock and decision.reason == "idle"


def test_tracker_carries_out_a_lock_request_once_whatever_the_idle_time():
    tracker = IdleTracker()
    policy = SessionPolicy(timeout_s=120, reason="isuo_idle", lock_request="r1")
    decision = tracker.step(0.0, policy)
    assert (decision.lock, decision.reason, decision.request_id) == (True, "isuo_end", "r1")
    assert not tracker.step(0.0, policy).lock
    assert not tracker.step(119, policy).lock
    assert tracker.step(121, policy).reason == "isuo_idle"


@given(st.lists(st.floats(min_value=0, max_value=2000, allow_nan=False), max_size=60),
       st.integers(min_value=1, max_value=1000))
def test_tracker_never_locks_twice_without_activity_in_between(readings, timeout):
    tracker, policy = IdleTracker(), SessionPolicy(timeout_s=timeout)
    locked_since_activity = False
    for idle in readings:
        decision = tracker.step(idle, policy)
        if idle < timeout:
            locked_since_activity = False
            assert not decision.lock
        elif decision.lock:
            assert not locked_since_activity
            locked_since_activity = True
        else:
            assert locked_since_activity  # over the timeout and not locked: only if already locked


@pytest.mark.parametrize("wire, problem", [
    ({"timeout_s": 0}, "positive"),
    ({"timeout_s": -5}, "positive"),
    ({"timeout_s": 60, "reason": "bored"}, "reason"),
])
def test_bad_policy_from_the_wire_is_refused(wire, problem):
    with pytest.raises(ValueError, match=problem):
        SessionPolicy.from_wire(wire)


def test_policy_round_trips_over_the_wire():
    p = SessionPolicy(timeout_s=120, reason="isuo_idle", lock_request="r9")
    assert SessionPolicy.from_wire(p.to_wire()) == p
