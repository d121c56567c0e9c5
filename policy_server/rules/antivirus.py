"""Antivirus rules (000 §4.2, §5.4): a threat found, the antivirus not working.

An event rule cannot see an absence, so "no completed full scan in 7 days" is
`overdue_full_scans()`: a pure function the server's periodic jobs call with
each workstation's last `av.scan.completed` (kind full).  Wiring it to a timer
is the server's job and is not done yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from policy_server.rules import IncidentDraft, RuleInput, Severity, digest, redact_path, rule

_DEAD = {"clamd_missing", "clamd_unreachable"}
_TITLES = {
    "clamd_missing": "Antivirus is not installed or not running on {where}",
    "clamd_unreachable": "Antivirus does not answer on {where}",
    "signatures_stale": "Antivirus signatures are out of date on {where}",
    "signatures_unknown": "Antivirus has no signature database on {where}",
}


def _where(event: RuleInput) -> str:
    return event.seat or event.hostname or event.agent_id


@rule("av.threat")
def threat_found(event: RuleInput) -> IncidentDraft:
    data = event.data
    quarantined = bool(data.get("quarantined"))
    source = str(data.get("source", "full"))
    return IncidentDraft(
        rule="av.threat",
        title=f"Malware {data.get('signature', '?')} found on {_where(event)}"
        + ("" if quarantined else " (NOT quarantined)"),
        # a threat left in place is worse than one in quarantine
        severity=Severity.high if quarantined else Severity.critical,
        clauses=("000 §4.2", "000 §5.4"),
        # the same file re-appearing (re-downloaded, same stick again) joins one incident for a day
        dedup_key=f"av.threat:{event.agent_id}:{data.get('sha256') or digest(str(data.get('path')))}",
        window_s=86400,
        params={
            "seat": event.seat,
            "path": redact_path(data.get("path")),
            "signature": data.get("signature"),
            "source": source,
            "quarantined": quarantined,
            "quarantine_id": data.get("quarantine_id"),
        },
    )


@rule("av.health")
def antivirus_not_working(event: RuleInput) -> IncidentDraft | None:
    problem = event.data.get("problem")
    if not problem:
        return None
    dead = problem in _DEAD
    return IncidentDraft(
        rule="av.health",
        title=_TITLES.get(problem, "Antivirus problem on {where}").format(where=_where(event)),
        severity=Severity.high if dead else Severity.medium,
        clauses=("000 §5.4",),
        dedup_key=f"av.health:{event.agent_id}:{problem}",
        window_s=86400,  # the agent repeats the problem every few hours; one incident a day
        params={
            "seat": event.seat,
            "problem": problem,
            "signature_version": event.data.get("signature_version"),
            "signature_age_days": event.data.get("signature_age_days"),
        },
    )


@rule("av.scan.completed")
def scan_with_errors(event: RuleInput) -> IncidentDraft | None:
    """A weekly scan that could not read many files is weak proof: tell the responsible person."""
    data = event.data
    if data.get("kind") != "full":
        return None
    files, errors = int(data.get("files") or 0), int(data.get("errors") or 0)
    if errors < 100 or errors < files * 0.05:
        return None
    return IncidentDraft(
        rule="av.scan.errors",
        title=f"Weekly antivirus scan on {_where(event)} could not read {errors} of {files} files",
        severity=Severity.low,
        clauses=("000 §5.4",),
        dedup_key=f"av.scan.errors:{event.agent_id}",
        window_s=7 * 86400,
        params={"seat": event.seat, "files": files, "errors": errors, "scan_id": data.get("scan_id")},
    )


def overdue_full_scans(
    last_full_scan: Mapping[str, datetime | None],
    *,
    now: datetime,
    max_age: timedelta = timedelta(days=7),
    names: Mapping[str, str] | None = None,
) -> list[IncidentDraft]:
    """One draft per agent whose last completed full scan is older than `max_age` (or missing).

    `last_full_scan`: agent id → time of its last `av.scan.completed` with kind "full"
    (None: never).  The dedup key is per agent and week, so the daily check adds to one
    incident until a scan arrives.
    """
    drafts = []
    for agent_id, last in sorted(last_full_scan.items()):
        if last is not None and now - last <= max_age:
            continue
        where = (names or {}).get(agent_id, agent_id)
        days = None if last is None else round((now - last).total_seconds() / 86400, 1)
        drafts.append(
            IncidentDraft(
                rule="av.full_scan_overdue",
                title=f"No weekly antivirus scan on {where} "
                + ("ever" if last is None else f"for {days} days"),
                severity=Severity.medium,
                clauses=("000 §5.4",),
                dedup_key=f"av.full_scan_overdue:{agent_id}",
                window_s=7 * 86400,
                params={
                    "agent_id": agent_id,
                    "last_full_scan": last.isoformat() if last else None,
                    "days": days,
                },
            )
        )
    return drafts
