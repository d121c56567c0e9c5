"""Server-side antivirus rules (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from policy_server.rules import RuleInput, Severity, evaluate, load_all_rules

load_all_rules()


def event(type_, data, agent="a1"):
    return RuleInput(
        event_id="e", type=type_, agent_id=agent, occurred_at=datetime.now(UTC), data=data, seat="lab1-07"
    )


def test_threat_is_high_and_critical_when_not_quarantined():
    [draft] = evaluate(
        event(
            "av.threat",
            {
                "path": "/home/u/Downloads/x.exe",
                "signature": "Eicar",
                "sha256": "ab" * 32,
                "quarantined": True,
                "source": "download",
            },
        )
    )
    assert draft.severity == Severity.high and draft.clauses == ("000 §4.2", "000 §5.4")
    assert "lab1-07" in draft.title and draft.params["source"] == "download"
    [left] = evaluate(event("av.threat", {"path": "/x", "signature": "Eicar", "quarantined": False}))
    assert left.severity == Severity.critical and "NOT quarantined" in left.title
    other_agent = evaluate(event("av.threat", {"path": "/x", "signature": "Eicar"}, agent="a2"))[0]
    assert other_agent.dedup_key != left.dedup_key


def test_health_problems_become_incidents_and_healthy_does_not():
    assert evaluate(event("av.health", {"clamd_reachable": True, "problem": None})) == []
    [dead] = evaluate(event("av.health", {"clamd_reachable": False, "problem": "clamd_unreachable"}))
    assert dead.severity == Severity.high and dead.clauses == ("000 §5.4",)
    [stale] = evaluate(
        event(
            "av.health", {"clamd_reachable": True, "problem": "signatures_stale", "signature_age_days": 12.5}
        )
    )
    assert stale.severity == Severity.medium and "out of date" in stale.title
    assert stale.dedup_key != dead.dedup_key


def test_full_scan_with_many_unreadable_files():
    assert evaluate(event("av.scan.completed", {"kind": "full", "files": 10000, "errors": 3})) == []
    [weak] = evaluate(event("av.scan.completed", {"kind": "full", "files": 1000, "errors": 400}))
    assert weak.severity == Severity.low
    assert evaluate(event("av.scan.completed", {"kind": "media", "files": 10, "errors": 10})) == []


def test_overdue_full_scans():
    from datetime import timedelta

    from policy_server.rules.antivirus import overdue_full_scans

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    drafts = overdue_full_scans({"fresh": now - timedelta(days=2), "old": now - timedelta(days=9),
                                 "never": None}, now=now, names={"old": "lab1-03"})
    assert [d.params["agent_id"] for d in drafts] == ["never", "old"]
    assert "lab1-03 for 9.0 days" in drafts[1].title and drafts[0].title.endswith("ever")
    assert all(d.clauses == ("000 §5.4",) for d in drafts)
