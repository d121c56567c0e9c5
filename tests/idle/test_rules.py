from __future__ import annotations

from datetime import UTC, datetime

from policy_server.rules import RuleInput, evaluate, load_all_rules


def event(**data) -> RuleInput:
    return RuleInput(event_id="e1", type="idle.lock_failed", agent_id="a1",
                     occurred_at=datetime(2025, 3, 1, 10, tzinfo=UTC), data={"error": "boom", **data},
                     seat="lab1-07", os_user="aigul")


def test_failure_after_isuo_is_high_and_cites_6_8():
    load_all_rules()
    [draft] = [d for d in evaluate(event(reason="no_helper")) if d.rule == "idle.lock_failed"]
    assert draft.severity == "high" and "000 §6.8" in draft.clauses
    assert "after ISUO" in draft.title


def test_ordinary_failure_is_medium_and_repeats_join_one_incident():
    load_all_rules()
    [first] = [d for d in evaluate(event()) if d.rule == "idle.lock_failed"]
    [again] = [d for d in evaluate(event(error="other")) if d.rule == "idle.lock_failed"]
    assert first.severity == "medium" and first.clauses == ("000 §6.4",)
    assert first.dedup_key == again.dedup_key and first.window_s >= 3600
