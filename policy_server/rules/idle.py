"""Idle-locking rules: a session that could not be locked is an incident
(000 §6.4 unattended equipment; 000 §6.8 lock after ISUO)."""

from __future__ import annotations

from policy_server.rules import IncidentDraft, RuleInput, Severity, rule

_ISUO_REASONS = {"isuo_end", "isuo_idle", "no_helper"}


@rule("idle.lock_failed")
def lock_failed(event: RuleInput) -> IncidentDraft:
    reason = str(event.data.get("reason", "idle"))
    isuo = reason in _ISUO_REASONS
    where = event.seat or event.hostname or event.agent_id
    return IncidentDraft(
        rule="idle.lock_failed",
        title=(f"Workstation {where} could not be locked after ISUO work" if isuo
               else f"Workstation {where} could not be locked when left idle"),
        # an unlocked screen after ISUO may show pupils' personal data (000 §6.7, §6.8)
        severity=Severity.high if isuo else Severity.medium,
        clauses=("000 §6.4", "000 §6.7", "000 §6.8") if isuo else ("000 §6.4",),
        # one incident per workstation per hour: a broken locker fails on every idle period
        dedup_key=f"idle.lock_failed:{event.agent_id}",
        window_s=3600,
        params={"seat": event.seat, "reason": reason,
                "error": str(event.data.get("error", ""))[:300]},
    )
