"""ISUO cross-checks (regulation README "ISUO access logs"; 000 §6.5, §6.8, 002 §4.4).  Pure.

ISUO is the ministry's system with students' and staff's personal data.  Its access log
(`IsuoAccess` rows, one per session seen by a workstation's proxy) is checked against what
else happened at that seat:

* `isuo_from_student_lab` — ISUO opened in a room marked as a student lab while no
  teacher's lesson runs there, or by an OS user listed in a student group (002 §4.4: only
  people with a signed obligation may use ISUO; a student lab seat outside a lesson is not
  such a place);
* `storage_during_isuo` — a USB storage device connected (or allowed) at the seat during an
  ISUO session or within 10 minutes after it ended (000 §6.5: no writing protected data to
  personal storage);
* `left_unlocked` — an ISUO session ended and the workstation did not lock within 2
  minutes (000 §6.8: lock the workstation after finishing work with ISUO).

These are not `@rule`s: each needs more than one event (the policy's lessons, the USB
events around a session, the absence of a lock).  `policy_server.checks` runs the queries
and hands the drafts to the incident engine; see docs/server.md "Periodic checks".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policy_server import protocol
from policy_server.rules import IncidentDraft, RuleInput, Severity

DAY = 86400
STORAGE_AFTER = timedelta(minutes=10)  # 000 §6.5: "during or right after" a session
LOCK_GRACE = timedelta(minutes=2)  # 000 §6.8: the agent locks at once; two minutes is generous
# A lock a few seconds before the recorded end still counts: the agent locks when it sees the
# session end, and the proxy's end time and the lock's time come from different clocks.
LOCK_EARLY_SLACK = timedelta(seconds=30)
USB_MASS_STORAGE_CLASS = 8


@dataclass(frozen=True)
class IsuoVisit:
    """One ISUO session as the checks see it (an `IsuoAccess` row, plain data)."""

    access_id: int
    agent_id: str
    host: str
    started_at: datetime
    ended_at: datetime | None = None
    seat: str | None = None
    os_user: str | None = None
    start_event_id: str | None = None


def _where(seat: str | None, hostname: str | None, agent_id: str) -> str:
    return seat or hostname or agent_id


# ----------------------------------------------------------------------------- (a) student lab


def lesson_running(lessons: Iterable[protocol.Lesson], room: str | None, at: datetime) -> bool:
    """Is a teacher's lesson running in `room` at `at`?"""
    return room is not None and any(les.room == room and les.starts_at <= at < les.ends_at for les in lessons)


def listed_group_kind(bundle: protocol.PolicyBundle, os_user: str | None) -> str | None:
    """The kind of the group that lists this OS user by name, or None.

    Only an explicit listing counts: every unlisted user falls into the default group
    (usually "student"), and teachers' accounts are often not listed, so the default
    group would make every ISUO session look like a student's."""
    if not os_user:
        return None
    for group in bundle.groups:
        if os_user in group.os_users:
            return group.kind.value
    return None


def isuo_from_student_lab(event: RuleInput, bundle: protocol.PolicyBundle) -> IncidentDraft | None:
    """An `isuo.session` start in a student lab outside a lesson, or by a listed student."""
    if event.data.get("state") != "start":
        return None
    started = event.data.get("started_at")
    at = datetime.fromisoformat(started) if isinstance(started, str) else (started or event.occurred_at)
    in_lab = event.room is not None and event.room in bundle.isuo.student_lab_rooms
    lab_without_lesson = in_lab and not lesson_running(bundle.lessons, event.room, at)
    by_student = listed_group_kind(bundle, event.os_user) == protocol.GroupKind.student.value
    if not (lab_without_lesson or by_student):
        return None
    why = "student_account" if by_student else "student_lab_no_lesson"
    where = _where(event.seat, event.hostname, event.agent_id)
    return IncidentDraft(
        rule="isuo.student_lab",
        title=(f"ISUO used by a student account on {where}" if by_student
               else f"ISUO used on {where} in student lab {event.room} outside a lesson"),
        severity=Severity.high,
        clauses=("002 §4.4", "000 §6.8"),
        # every session at one seat in a day is one incident
        dedup_key=f"isuo.student_lab:{event.agent_id}",
        window_s=DAY,
        # the OS user is on the incident itself (hidden from the director); not repeated here
        params={"where": where, "room": event.room, "host": event.data.get("host"), "why": why},
    )


# ----------------------------------------------------------------------------- (b) storage


def is_storage(usb_data: dict[str, Any]) -> bool:
    """A `usb.*` event's device is storage: classified so by the agent, or a mass-storage interface."""
    device = usb_data.get("device") or {}
    if "storage" in (device.get("kinds") or []):
        return True
    return any((i or {}).get("cls") == USB_MASS_STORAGE_CLASS for i in device.get("interfaces") or [])


def storage_during_isuo(visit: IsuoVisit, usb_event: RuleInput, *,
                        after: timedelta = STORAGE_AFTER) -> IncidentDraft | None:
    """A storage device connected or allowed at the visit's seat during it or `after` it ended."""
    if usb_event.type not in ("usb.connected", "usb.allowed") or usb_event.agent_id != visit.agent_id:
        return None
    if not is_storage(usb_event.data):
        return None
    at = usb_event.occurred_at
    if at < visit.started_at or (visit.ended_at is not None and at > visit.ended_at + after):
        return None
    device = usb_event.data.get("device") or {}
    ident = f"{device.get('vendor_id', '????')}:{device.get('product_id', '????')}"
    where = _where(usb_event.seat or visit.seat, usb_event.hostname, visit.agent_id)
    during = visit.ended_at is None or at <= visit.ended_at
    return IncidentDraft(
        rule="isuo.storage",
        title=f"Storage device {ident} connected on {where} "
        + ("during an ISUO session" if during else "right after an ISUO session"),
        severity=Severity.high,
        clauses=("000 §6.5", "000 §6.8"),
        dedup_key=f"isuo.storage:{visit.agent_id}:{visit.access_id}",  # one incident per session
        window_s=DAY,
        params={"where": where, "device": ident, "product": device.get("product"),
                "serial": device.get("serial"), "during": during, "host": visit.host,
                "isuo_started_at": visit.started_at.isoformat(),
                "isuo_ended_at": visit.ended_at.isoformat() if visit.ended_at else None},
    )


# ----------------------------------------------------------------------------- (c) left unlocked


def left_unlocked(visit: IsuoVisit, lock_times: Iterable[datetime], *, now: datetime,
                  reported_until: datetime | None, where: str | None = None,
                  grace: timedelta = LOCK_GRACE) -> IncidentDraft | None:
    """An ended ISUO session with no lock of the workstation within `grace`.

    `lock_times`: when the workstation locked (`idle.locked`, any reason: a lock for being
    idle also hides the data).  `reported_until`: the newest event the agent has sent; the
    agent sends in order, so only when it is past the deadline can the absence of a lock be
    trusted (an agent that was offline has not told us yet).  None = nothing is known."""
    if visit.ended_at is None:
        return None  # still open (or its end was lost): nothing to judge yet
    deadline = visit.ended_at + grace
    if now < deadline or reported_until is None or reported_until < deadline:
        return None
    if any(visit.ended_at - LOCK_EARLY_SLACK <= t <= deadline for t in lock_times):
        return None
    where = where or _where(visit.seat, None, visit.agent_id)
    return IncidentDraft(
        rule="isuo.unlocked",
        title=f"Workstation {where} was not locked after an ISUO session",
        severity=Severity.medium,
        clauses=("000 §6.8", "000 §6.7"),
        dedup_key=f"isuo.unlocked:{visit.agent_id}:{visit.access_id}",
        window_s=DAY,
        params={"where": where, "host": visit.host, "isuo_ended_at": visit.ended_at.isoformat(),
                "grace_s": int(grace.total_seconds())},
    )
