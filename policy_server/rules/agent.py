"""Incident rules about the agents themselves (000 §3.2: monitor the security tools)."""

from __future__ import annotations

from policy_server.rules import IncidentDraft, RuleInput, Severity, rule

DAY_S = 24 * 3600
HOUR_S = 3600


@rule("agent.events_dropped")
def events_dropped(event: RuleInput) -> IncidentDraft:
    counts = {str(k): int(v) for k, v in (event.data.get("counts") or {}).items()}
    return IncidentDraft(
        rule="agent.events_dropped",
        title=f"{event.hostname or 'A workstation'} dropped {sum(counts.values())} events (outbox full)",
        severity=Severity.medium,
        clauses=("000 §3.2",),
        dedup_key=f"agent.events_dropped:{event.agent_id}",
        window_s=DAY_S,
        params={"counts": counts, "hostname": event.hostname},
    )


@rule("agent.heartbeat")
def collector_failed(event: RuleInput) -> IncidentDraft | None:
    collectors = event.data.get("collectors") or {}
    failed = sorted(name for name, health in collectors.items()
                    if isinstance(health, dict) and health.get("state") == "failed")
    if not failed:
        return None
    return IncidentDraft(
        rule="agent.collector_failed",
        title=f"{', '.join(failed)} not working on {event.hostname or 'a workstation'}",
        severity=Severity.high,
        clauses=("000 §3.2",),
        dedup_key=f"agent.collector_failed:{event.agent_id}:{','.join(failed)}",
        window_s=HOUR_S,
        params={"collectors": failed, "hostname": event.hostname,
                "details": {name: collectors[name].get("detail", "") for name in failed}},
    )
