"""Incident rules for integrity events (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from policy_server.rules import RuleInput, Severity, evaluate
from policy_server.rules.integrity import check_baseline_chain


def ev(event_type: str, **data) -> RuleInput:
    return RuleInput(
        event_id="e1",
        type=event_type,
        agent_id="a1",
        occurred_at=datetime.now(UTC),
        data=data,
        seat="lab1-05",
    )


def test_change_severities():
    manual = evaluate(ev("integrity.changed", path="/usr/bin/ls", change="modified"))[0]
    hidden = evaluate(ev("integrity.changed", path="/usr/bin/ls", change="modified", mtime_restored=True))[0]
    update = evaluate(
        ev("integrity.changed", path="/usr/bin/ls", change="modified", by_package_manager=True)
    )[0]
    drop = evaluate(ev("integrity.changed", path="/tmp/x", change="added", area="drop"))[0]
    assert (manual.severity, hidden.severity, update.severity, drop.severity) == (
        Severity.high,
        Severity.critical,
        Severity.low,
        Severity.medium,
    )
    assert manual.dedup_key == hidden.dedup_key != update.dedup_key
    assert "000 §6.5" in drop.clauses


def test_tampered_installed_and_rebuilt():
    assert evaluate(ev("integrity.tampered", detail="x"))[0].severity == Severity.critical
    assert evaluate(ev("software.changed", installed=["tor 1"]))[0].rule == "software.installed"
    assert evaluate(ev("software.changed", upgraded=["a 1 -> 2"])) == []
    assert (
        evaluate(ev("integrity.baseline", digest="d", files=1, reason="rebuilt"))[0].severity == Severity.low
    )
    assert evaluate(ev("integrity.baseline", digest="d", files=1, reason="accepted")) == []


def test_baseline_chain():
    last = {"digest": "d1", "seq": 3}
    assert check_baseline_chain(None, ev("integrity.baseline", digest="d0", files=1)) is None
    assert check_baseline_chain(last, ev("integrity.baseline", digest="d2", prev_digest="d1", seq=4)) is None
    assert check_baseline_chain(last, ev("integrity.baseline", digest="d1", reason="verified")) is None
    forged = check_baseline_chain(last, ev("integrity.baseline", digest="dX", reason="verified"))
    assert forged.severity == Severity.critical and forged.params["expected"] == "d1"
    assert (
        check_baseline_chain(last, ev("integrity.baseline", digest="d9", prev_digest="d7", seq=9)) is not None
    )
