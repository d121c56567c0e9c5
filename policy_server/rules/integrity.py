"""Incident rules for software integrity (000 §4.2, §5.6, §6.5).  Pure functions.

* a change the package manager does not explain → high (critical when the
  modification time was set back: someone hid it); one incident per workstation
  per hour, however many files;
* a package update (dpkg's md5sums explain it) → low, one per workstation per day:
  the responsible person controls authorised changes too (000 §4.2);
* a program dropped in a download/temp folder → medium (000 §6.5);
* a tampered baseline → critical;
* programs installed (software inventory) → medium;
* the baseline chain: `check_baseline_chain(last_known, event)` tells whether a new
  `integrity.baseline` continues the chain the server holds.  The server-core's
  ingest calls it with the previous stored `integrity.baseline` data of the agent
  (rules alone see one event, so this one needs that caller).
"""

from __future__ import annotations

from typing import Any

from policy_server.rules import IncidentDraft, RuleInput, Severity, redact_path, rule

HOUR, DAY = 3600, 86400


def _where(event: RuleInput) -> str:
    return event.seat or event.hostname or event.agent_id


@rule("integrity.changed")
def integrity_changed(event: RuleInput) -> IncidentDraft | None:
    data = event.data
    path, change = redact_path(data.get("path", "")), data.get("change", "")
    params = {
        "path": path,
        "change": change,
        "package": data.get("package"),
        "where": _where(event),
        "detected_by": data.get("detected_by"),
    }
    if data.get("area") == "drop":
        return IncidentDraft(
            rule="integrity.program_dropped",
            title=f"Program dropped at {path} on {_where(event)}",
            severity=Severity.medium,
            clauses=("000 §6.5", "000 §4.2"),
            dedup_key=f"integrity.drop:{event.agent_id}",
            window_s=HOUR,
            params=params,
        )
    if data.get("by_package_manager"):
        return IncidentDraft(
            rule="integrity.package_update",
            title=f"Software updated by the package manager on {_where(event)}",
            severity=Severity.low,
            clauses=("000 §4.2",),
            dedup_key=f"integrity.update:{event.agent_id}",
            window_s=DAY,
            params=params,
        )
    hidden = bool(data.get("mtime_restored"))
    return IncidentDraft(
        rule="integrity.unauthorised_change",
        title=f"Unauthorised change ({change}) of {path} on {_where(event)}"
        + (" with its modification time set back" if hidden else ""),
        severity=Severity.critical if hidden else Severity.high,
        clauses=("000 §4.2", "000 §5.6"),
        dedup_key=f"integrity.change:{event.agent_id}",
        window_s=HOUR,
        params={**params, "hidden": hidden},
    )


@rule("integrity.tampered")
def integrity_tampered(event: RuleInput) -> IncidentDraft:
    return IncidentDraft(
        rule="integrity.tampered",
        title=f"Integrity baseline tampered with on {_where(event)}",
        severity=Severity.critical,
        clauses=("000 §4.2", "000 §5.6"),
        dedup_key=f"integrity.tampered:{event.agent_id}",
        window_s=DAY,
        params={"detail": event.data.get("detail", ""), "where": _where(event)},
    )


@rule("software.changed")
def software_changed(event: RuleInput) -> IncidentDraft | None:
    installed = event.data.get("installed") or []
    if not installed:
        return None  # upgrades and removals are visible in the events; installs are what 000 §6.5 forbids
    return IncidentDraft(
        rule="software.installed",
        title=f"{len(installed)} program(s) installed on {_where(event)}",
        severity=Severity.medium,
        clauses=("000 §6.5", "000 §4.2"),
        dedup_key=f"software.installed:{event.agent_id}",
        window_s=DAY,
        params={"installed": installed[:50], "where": _where(event)},
    )


@rule("integrity.baseline")
def baseline_rebuilt(event: RuleInput) -> IncidentDraft | None:
    """A baseline rebuilt by hand takes in every change made before it: someone must know."""
    if event.data.get("reason") != "rebuilt":
        return None
    return IncidentDraft(
        rule="integrity.baseline_rebuilt",
        title=f"Integrity baseline rebuilt by hand on {_where(event)}",
        severity=Severity.low,
        clauses=("000 §4.2",),
        dedup_key=f"integrity.rebuilt:{event.agent_id}",
        window_s=DAY,
        params={"digest": event.data.get("digest"), "where": _where(event)},
    )


def check_baseline_chain(last_known: dict[str, Any] | None, event: RuleInput) -> IncidentDraft | None:
    """Does this `integrity.baseline` continue the chain the server holds?

    `last_known` is the data of the previous `integrity.baseline` stored for the agent
    (None for the first).  A "verified" report must repeat the last digest; a new
    version must name it as `prev_digest`.  Anything else means the baseline on the
    workstation is not the one the server was told about: root replaced it.
    """
    if last_known is None:
        return None
    data = event.data
    last = last_known.get("digest")
    if data.get("reason") == "verified":
        broken = data.get("digest") != last
    else:
        broken = data.get("prev_digest") != last and data.get("digest") != last
    if not broken:
        return None
    return IncidentDraft(
        rule="integrity.chain_broken",
        title=f"Integrity baseline on {_where(event)} is not the one the server knows",
        severity=Severity.critical,
        clauses=("000 §4.2", "000 §5.6"),
        dedup_key=f"integrity.chain:{event.agent_id}",
        window_s=DAY,
        params={
            "expected": last,
            "found": data.get("digest"),
            "prev": data.get("prev_digest"),
            "where": _where(event),
        },
    )
