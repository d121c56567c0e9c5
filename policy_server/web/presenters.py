"""What the pages show, as plain data: the pure core of the web console.

Nothing here touches the database or the request.  The route handlers load rows,
hand them to these functions, and render what comes back, so the decisions
(who may see which column, when a workstation counts as silent, how an incident
title reads in Kyrgyz) are tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from policy_server.incidents.details import TITLE_PARAM_VALUES
from policy_server.isuo.titles import ISUO_TITLES
from policy_server.web import i18n
from policy_server.web.i18n import N_

# ----------------------------------------------------------------------------- roles

ADMIN, TEACHER, DIRECTOR, DISTRICT = "admin", "teacher", "director", "district"

ROLE_NAMES = {
    ADMIN: N_("Responsible person"),
    TEACHER: N_("Teacher"),
    DIRECTOR: N_("Director"),
    DISTRICT: N_("District viewer"),
}


@dataclass(frozen=True)
class Permissions:
    """What one role may do in the console (002 §4, 004 §3: full vs read-only users)."""

    see_incidents: bool
    act_on_incidents: bool  # acknowledge, assign, resolve
    see_personal_data: bool  # OS user names, event details (002 §3.1, 001 §2.15)
    see_all_rooms: bool
    see_workstations: bool
    see_isuo_log: bool


def permissions_for(role: str) -> Permissions:
    if role == ADMIN:
        return Permissions(see_incidents=True, act_on_incidents=True, see_personal_data=True,
                           see_all_rooms=True, see_workstations=True, see_isuo_log=True)
    if role == TEACHER:
        # A teacher supervises their own lab (000 §7.3): its incidents, with who sat where.
        return Permissions(see_incidents=True, act_on_incidents=False, see_personal_data=True,
                           see_all_rooms=False, see_workstations=True, see_isuo_log=False)
    if role == DIRECTOR:
        # Read-only summaries: counts and titles, no OS user names (002 §3.1).
        return Permissions(see_incidents=True, act_on_incidents=False, see_personal_data=False,
                           see_all_rooms=True, see_workstations=True, see_isuo_log=False)
    # District viewers (and any unknown role) get nothing from the school console.
    return Permissions(see_incidents=False, act_on_incidents=False, see_personal_data=False,
                       see_all_rooms=False, see_workstations=False, see_isuo_log=False)


# ----------------------------------------------------------------------------- incidents

STATUSES = ("new", "acknowledged", "resolved")
MAX_PAGE = 1_000_000  # page numbers beyond this are read as this one
SEVERITIES = ("critical", "high", "medium", "low")

STATUS_NAMES = {
    "new": N_("New"),
    "acknowledged": N_("Acknowledged"),
    "resolved": N_("Resolved"),
}
SEVERITY_NAMES = {
    "low": N_("Low"),
    "medium": N_("Medium"),
    "high": N_("High"),
    "critical": N_("Critical"),
}
TIMELINE_ACTIONS = {
    "opened": N_("Opened"),
    "events_added": N_("More events joined"),
    "notified": N_("Notified"),
    "acknowledged": N_("Acknowledged"),
    "assigned": N_("Assigned"),
    "resolved": N_("Resolved"),
    "reopened": N_("Reopened"),
    "commented": N_("Comment"),
}

# Incident titles per rule.  Rules write an English title and `params`; the console
# shows the title in the reader's language when the rule is known here and its
# params fill the placeholders, and the rule's own English title otherwise.
INCIDENT_TITLES = {
    "web.report": N_("A user reported a page: %(url)s"),
    "web.blocked": N_("Repeated attempts to open blocked pages"),
    "web.alert": N_("Alarming search or page"),
    "web.unblock_request": N_("Request to unblock a page: %(url)s"),
    "av.threat": N_("Virus found"),
    "av.health": N_("Antivirus is not working properly"),
    "av.scan.errors": N_("The weekly antivirus scan could not read some files"),
    "av.full_scan_overdue": N_("Weekly antivirus scan is overdue"),  # policy_server/checks/periodic.py
    "integrity.chain_broken": N_("Integrity baseline on %(where)s is not the one the server knows"),
    "isuo.student_lab": N_(
        "ISUO used from a student lab outside a lesson or by a student account: %(where)s"),
    "isuo.storage": N_("Storage device connected during or right after an ISUO session: %(where)s"),
    "isuo.unlocked": N_("Workstation %(where)s was not locked after an ISUO session"),
    "usb.blocked": N_("A USB device was blocked"),
    "integrity.unauthorised_change": N_("Installed software was changed without authorisation"),
    "integrity.package_update": N_("Software was updated by the package manager"),
    "integrity.program_dropped": N_("A program was saved in a folder users can write to"),
    "integrity.baseline_rebuilt": N_("The integrity baseline was rebuilt by hand"),
    "integrity.tampered": N_("Integrity baseline was tampered with"),
    "software.installed": N_("Programs were installed"),
    "idle.lock_failed": N_("The workstation could not be locked"),
    "net.arp_spoof": N_("Network attack: gateway address spoofed"),
    "net.rogue_dhcp": N_("Network attack: a foreign DHCP server"),
    "net.rogue_ra": N_("Network attack: a foreign IPv6 router"),
    "net.bypass": N_("Attempt to bypass the filter (%(kind)s)"),
    "agent.collector_failed": N_("Parts of the agent are not working"),
    "agent.events_dropped": N_("A workstation had to drop events: its outbox was full"),
    "agent.identity_mismatch": N_(
        "Workstation %(where)s claims to be %(claimed)s; it was enrolled as %(enrolled)s"),
    "auth.login_burst": N_("Many failed logins (account %(account)s, address %(address)s)"),
}


INCIDENT_TITLES.update(ISUO_TITLES)  # the ISUO register's cross-checks (policy_server/isuo, its own catalog)


def incident_title(language: str, rule: str, params: Mapping[str, Any] | None, fallback: str) -> str:
    message = INCIDENT_TITLES.get(rule)
    if message is None:
        return fallback
    values = dict(params or {})
    for name, table in TITLE_PARAM_VALUES.get(rule, {}).items():
        if isinstance(values.get(name), str) and values[name] in table:  # a code, e.g. a bypass kind
            values[name] = i18n.translate(language, table[values[name]])
    try:
        # Always %-format, even with no params: a title whose placeholder has no value falls back.
        return i18n.translations(language).gettext(message) % values
    except (KeyError, TypeError, ValueError):
        # The rule's params changed shape; its own English title is still true.
        return fallback


@dataclass(frozen=True)
class IncidentFilter:
    status: str | None = None
    severity: str | None = None
    page: int = 1

    @classmethod
    def from_query(cls, status: str | None, severity: str | None, page: str | int | None) -> IncidentFilter:
        """Forgiving on purpose: a hand-edited URL shows the unfiltered list, not an error."""
        try:
            number = max(1, int(page or 1))
        except ValueError:
            number = 1
        number = min(number, MAX_PAGE)  # past the last page is an empty page, never a database overflow
        return cls(
            status=status if status in STATUSES else None,
            severity=severity if severity in SEVERITIES else None,
            page=number,
        )

    def query(self, **overrides: Any) -> str:
        """The URL query for this filter with some fields replaced (for links)."""
        values = {"status": self.status, "severity": self.severity, "page": self.page, **overrides}
        if values.get("page") == 1:
            values.pop("page")
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class Pagination:
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


# ----------------------------------------------------------------------------- workstations

# Heartbeats come every minute or so; ten minutes of silence is worth a look.
SILENT_AFTER_MINUTES = 10

COLLECTOR_STATES = {
    "ok": N_("Working"),
    "degraded": N_("Degraded"),
    "failed": N_("Failed"),
    "stopped": N_("Stopped"),
}


@dataclass(frozen=True)
class CollectorView:
    name: str
    state: str
    detail: str


@dataclass(frozen=True)
class WorkstationView:
    id: str
    hostname: str
    room: str
    seat: str
    last_seen_at: datetime | None
    silent_minutes: int | None  # None: seen recently; otherwise minutes since last seen
    never_seen: bool
    policy_version: int | None
    agent_version: str
    collectors: list[CollectorView] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.never_seen and self.silent_minutes is None and all(
            c.state == "ok" for c in self.collectors
        )


def minutes_silent(last_seen_at: datetime | None, now: datetime,
                   threshold: int = SILENT_AFTER_MINUTES) -> int | None:
    """Whole minutes since the last heartbeat when that is `threshold` or more, else None."""
    if last_seen_at is None:
        return None
    if last_seen_at.tzinfo is None:
        last_seen_at = last_seen_at.replace(tzinfo=UTC)
    minutes = int((now - last_seen_at).total_seconds() // 60)
    return minutes if minutes >= threshold else None


def collectors_from_health(health: Mapping[str, Any] | None) -> list[CollectorView]:
    """Each collector's state from the last heartbeat's data (see protocol.Heartbeat)."""
    collectors = (health or {}).get("collectors") or {}
    views = []
    for name in sorted(collectors):
        entry = collectors[name] if isinstance(collectors[name], Mapping) else {}
        state = str(entry.get("state", "failed"))
        views.append(CollectorView(name=name, state=state if state in COLLECTOR_STATES else "failed",
                                   detail=str(entry.get("detail", ""))[:300]))
    return views


def workstation_view(ws: Any, now: datetime) -> WorkstationView:
    """From one row of `agents.service.list_workstations` (room as a name, health as the heartbeat)."""
    return WorkstationView(
        id=ws.id,
        hostname=ws.hostname,
        room=ws.room or "",
        seat=ws.seat or "",
        last_seen_at=ws.last_seen_at,
        silent_minutes=minutes_silent(ws.last_seen_at, now),
        never_seen=ws.last_seen_at is None,
        policy_version=ws.policy_version,
        agent_version=ws.agent_version or "",
        collectors=collectors_from_health(ws.health),
    )


def sort_workstations(views: Iterable[WorkstationView]) -> list[WorkstationView]:
    """Trouble first (never seen, silent, unhealthy), then by room and seat."""
    return sorted(views, key=lambda v: (v.healthy, v.room, v.seat, v.hostname))


# ----------------------------------------------------------------------------- incident details

@dataclass(frozen=True)
class EventView:
    id: str
    type: str
    occurred_at: datetime
    os_user: str | None
    seat: str | None
    data: dict[str, Any]
    clauses: list[str]


def event_view(event: Any, perms: Permissions) -> EventView:
    """An event as this role may see it: without OS user and details when personal data is hidden."""
    return EventView(
        id=event.id,
        type=event.type,
        occurred_at=event.occurred_at,
        os_user=event.os_user if perms.see_personal_data else None,
        seat=event.seat,
        data=dict(event.data or {}) if perms.see_personal_data else {},
        clauses=list(event.clauses or []),
    )
