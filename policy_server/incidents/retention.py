"""Retention of the student's OS account in resolved incidents (001 §2.15), run by
`policy_server.db.retention`.

An incident is never deleted (004 §3.6), but the OS account it keeps (`Incident.os_user`, shown
to those who see personal data) names a minor.  A *resolved* incident (the only status that
is done: `new` and `acknowledged` are still being worked) whose last activity — its last
event (`last_seen_at`) and the last entry of its timeline a person or a rule made — is before
the retention cut-off loses the account:

* `os_user` becomes None;
* wherever the same account is written into the incident — its `params`, `title`,
  `dedup_key`, the detail of its timeline entries (a resolution's reason is a person's words),
  the person's `resolution` and the `incident.*` audit records of it — it is replaced by a
  neutral placeholder: the account as a whole word ("…", so `/home/st7b/x` reads
  `/home/…/x`, as `rules.redact_path` writes) and, in the key, its pseudonym
  (`rules.pseudonym`, the stable stand-in a key carries since 0105) by `removed`;
* `params["personal_removed"] = {"days": N}` and a timeline entry `personal_removed` (the
  days, the clause) say why the account is empty: the incident page says "account removed after N
  days (001 §2.15)" instead of a blank, in the reader's language.

The rule, severity, clauses, counts, first/last seen, the seat and the workstation (facts
about the machine, the fleet's history), the class and the resolution stay; values under
the machine's own keys (`seat`, `where`, `hostname`, `room`, …) are never rewritten, even if
an account happens to be called like a seat.  A done incident has no `os_user` any more and
no longer matches, so a second run changes nothing.  A de-personalised incident cannot be
joined by a new event: the engine only ever adds to an *unresolved* incident
(`engine._open_incidents`), and its key now ends in `removed`, which no rule makes.

The retention's own timeline entries (`events_removed`, `personal_removed`) are not
activity: the events' removal of an old incident must not hold its account for 90 days more.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from policy_server.db.models import AuditRecord, Incident, IncidentStatus, TimelineEntry
from policy_server.rules import pseudonym
from policy_server.web.i18n import N_, translate

REMOVED_KEY = "personal_removed"  # in params, and the timeline action
CLAUSE = "001 §2.15"
BATCH = 500  # incidents per round of apply_retention
PLACEHOLDER = "…"  # the account in a text (as redact_path writes a home folder)
KEY_PLACEHOLDER = "removed"  # the account's pseudonym in a dedup key: no rule makes it
# Timeline entries the retention itself writes: not "activity" of the incident.
RETENTION_ACTIONS = ("events_removed", REMOVED_KEY)
# Params that are facts about the machine (kept, never rewritten).
MACHINE_KEYS = frozenset({"seat", "where", "hostname", "room", "agent_id", "host", "claimed", "enrolled"})
# Params that only ever hold an account name: emptied whatever they hold.
ACCOUNT_KEYS = ("os_user", "user")

# The incident page: the "User" row, and the timeline entry (incidents' catalog).
USER_REMOVED = N_("account removed after %(days)s days (001 §2.15)")
TIMELINE_ACTION = N_("Student's account removed")
TIMELINE_NOTE = N_("the student's computer account was taken out of this incident after %(days)s days "
                   "(001 §2.15)")
# db/retention.py's entry when a resolved incident's old events go (it showed as the raw code).
EVENTS_ACTION = N_("Old events removed")
EVENTS_NOTE = N_("events removed after %(days)s days: %(count)s (001 §2.15)")
# The retention command's line (policy_server.db.retention.personal_lines).
PLAN_LINE = N_("resolved incidents losing the student's computer account (the incident stays): "
               "%(count)s")


def _activity_since(cutoff: datetime):
    """A timeline entry of the incident at or after the cut-off that a person or a rule made."""
    return exists().where(TimelineEntry.incident_id == Incident.id, TimelineEntry.at >= cutoff,
                          TimelineEntry.action.not_in(RETENTION_ACTIONS))


def _old_resolved(cutoff: datetime):
    return (Incident.status == IncidentStatus.resolved, Incident.os_user.is_not(None),
            Incident.last_seen_at < cutoff, ~_activity_since(cutoff))


def retention_count(db: Session, *, cutoff: datetime) -> int:
    """How many resolved incidents past the cut-off still keep a student's account; changes nothing."""
    return db.scalar(select(func.count()).select_from(Incident).where(*_old_resolved(cutoff))) or 0


def _word(name: str) -> re.Pattern:
    """The account as a whole word: not inside a longer name (`st7b` in `st7b2`, `st7b.local`),
    but at the end of a sentence ("by st7b.") or in a path (`/home/st7b/`)."""
    return re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)")


class _Scrubber:
    def __init__(self, name: str):
        self.word = _word(name)
        self.pseudonym = pseudonym(name)

    def text(self, value: str) -> str:
        return self.word.sub(PLACEHOLDER, value)

    def key(self, value: str) -> str:
        parts = [KEY_PLACEHOLDER if part == self.pseudonym else part for part in value.split(":")]
        return self.word.sub(KEY_PLACEHOLDER, ":".join(parts))

    def value(self, value: Any, key: str | None = None) -> Any:
        if key in MACHINE_KEYS:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v, k) for k, v in value.items()}
        return value


def apply_retention(db: Session, *, cutoff: datetime, days: int, actor: str, now: datetime) -> int:
    """Take the student's account out of the old resolved incidents (the caller commits).
    In batches (the first run on a school's years of incidents: bounded IN lists and memory)."""
    ids = list(db.scalars(select(Incident.id).where(*_old_resolved(cutoff)).order_by(Incident.id)))
    for start in range(0, len(ids), BATCH):
        _apply_batch(db, ids[start:start + BATCH], days=days, actor=actor, now=now)
    return len(ids)


def _apply_batch(db: Session, ids: list[int], *, days: int, actor: str, now: datetime) -> None:
    incidents = list(db.scalars(select(Incident).where(Incident.id.in_(ids))))
    scrubbers = {i.id: _Scrubber(i.os_user) for i in incidents}
    for entry in db.scalars(select(TimelineEntry).where(TimelineEntry.incident_id.in_(ids))):
        detail = scrubbers[entry.incident_id].value(entry.detail or {})
        if detail != (entry.detail or {}):
            entry.detail = detail  # a new dict: the JSON column sees the change
    targets = {f"incident:{i}": i for i in ids}
    for record in db.scalars(select(AuditRecord).where(AuditRecord.action.like("incident.%"),
                                                       AuditRecord.target.in_(sorted(targets)))):
        detail = scrubbers[targets[record.target]].value(record.detail or {})
        if detail != (record.detail or {}):
            record.detail = detail
    for incident in incidents:
        scrub = scrubbers[incident.id]
        params = scrub.value(dict(incident.params or {}))
        for key in ACCOUNT_KEYS:
            if key in params:
                params[key] = None
        params[REMOVED_KEY] = {"days": days}
        incident.params = params
        incident.title = scrub.text(incident.title or "")
        incident.dedup_key = scrub.key(incident.dedup_key or "")[:300]
        if incident.resolution:
            incident.resolution = scrub.text(incident.resolution)
        if incident.resolution_params:
            incident.resolution_params = scrub.value(dict(incident.resolution_params))
        incident.os_user = None
        db.add(TimelineEntry(incident_id=incident.id, actor=actor, action=REMOVED_KEY, at=now,
                             detail={"days": days, "clauses": [CLAUSE]}))
    db.flush()


def removed_days(incident: Incident) -> int | None:
    """The retention days after which the incident's account was removed, or None (not removed)."""
    marker = (incident.params or {}).get(REMOVED_KEY)
    if isinstance(marker, dict):
        try:
            return int(marker.get("days"))
        except (TypeError, ValueError):
            return None
    return None


def user_removed_text(language: str, incident: Incident) -> str | None:
    """For the incident page's "User" row: why it is empty, or None."""
    days = removed_days(incident)
    return None if days is None else translate(language, USER_REMOVED, days=days)


def timeline_texts(language: str, action: str, detail: dict) -> tuple[str, str]:
    """A retention timeline entry's (RETENTION_ACTIONS) action name and note in the reader's
    language; names nobody, so every reader sees it."""
    days = detail.get("days")
    days = days if days is not None else "—"
    if action == REMOVED_KEY:
        return translate(language, TIMELINE_ACTION), translate(language, TIMELINE_NOTE, days=days)
    count = detail.get("count")
    return translate(language, EVENTS_ACTION), translate(language, EVENTS_NOTE, days=days,
                                                         count=count if count is not None else "—")


def plan_line(language: str, count: int) -> str:
    return translate(language, PLAN_LINE, count=f"{count:,}")
