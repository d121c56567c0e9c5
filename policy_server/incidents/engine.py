"""The incident engine: rules' drafts → new incidents or additions to open ones.

For a batch of accepted events it runs `policy_server.rules.evaluate` on each (pure), groups
the drafts by `dedup_key`, and for each key either adds the events to the open incident
whose aggregation window contains them (count, last seen, links, one timeline entry per
batch) or opens a new incident (window = first event + `window_s`).  One query per distinct
key, not per event, so a flood of fifty blocked pages costs one lookup.

Drafts with `notify` leave a `Notification`: `class_teacher` is resolved through the policy
bundle (the student's group → its `class_teacher` username, 001 §2.7); other roles are
addressed by role.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import (
    Incident,
    IncidentEvent,
    IncidentStatus,
    Notification,
    Person,
    TimelineEntry,
    utcnow,
)
from policy_server.rules import IncidentDraft, RuleInput, Severity, evaluate, load_all_rules

SYSTEM = "system"
_SEVERITY_RANK = {s.value: i for i, s in enumerate(Severity)}

load_all_rules()


def _max_severity(a: str, b: str) -> str:
    return a if _SEVERITY_RANK.get(a, 0) >= _SEVERITY_RANK.get(b, 0) else b


class _BundleCache:
    """The policy bundle, read at most once per batch and only if a draft needs it."""

    def __init__(self, db: Session):
        self.db = db
        self._bundle: protocol.PolicyBundle | None = None

    def get(self) -> protocol.PolicyBundle:
        if self._bundle is None:
            from policy_server.policies.service import current_bundle

            self._bundle = current_bundle(self.db)
        return self._bundle


def process_events(db: Session, events: list[RuleInput]) -> list[Incident]:
    """Run the rules on stored events and merge the drafts; returns incidents touched."""
    by_key: dict[str, list[tuple[IncidentDraft, RuleInput]]] = defaultdict(list)
    for event in events:
        for draft in evaluate(event):
            by_key[draft.dedup_key[:300]].append((draft, event))
    if not by_key:
        return []
    keys = sorted(by_key)
    with db.no_autoflush:
        if db.get_bind().dialect.name == "postgresql":
            # Advisory locks on the keys, taken in sorted order in one statement: two concurrent
            # batches touching the same keys queue instead of deadlocking, cannot both open an
            # incident for one key, and never lose an update of `event_count`.  (SQLite's
            # BEGIN IMMEDIATE already runs one writer at a time.)
            db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                            "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"), {"keys": keys})
        earliest = min(e.occurred_at for e in events)
        open_by_key: dict[str, Incident] = {}
        for incident in db.scalars(
            select(Incident)
            .where(Incident.dedup_key.in_(keys), Incident.status != IncidentStatus.resolved,
                   Incident.window_ends_at >= earliest)
            .order_by(Incident.id)
        ):
            open_by_key[incident.dedup_key] = incident  # the newest one wins
        touched: dict[int, Incident] = {}
        opened: list[tuple[Incident, IncidentDraft, RuleInput]] = []
        added: dict[int, int] = defaultdict(int)  # id(incident) → events added in this batch
        members: list[tuple[Incident, str]] = []
        for key in keys:
            incident = open_by_key.get(key)
            for draft, event in sorted(by_key[key], key=lambda p: p[1].occurred_at):
                if incident is None or event.occurred_at > incident.window_ends_at:
                    incident = _new_incident(draft, event)
                    opened.append((incident, draft, event))
                else:
                    incident.event_count += 1
                    incident.last_seen_at = max(incident.last_seen_at, event.occurred_at)
                    incident.severity = _max_severity(incident.severity, draft.severity.value)
                    added[id(incident)] += 1
                touched[id(incident)] = incident
                members.append((incident, event.event_id))
        db.add_all(i for i, _, _ in opened)
        db.flush()  # one multi-row INSERT for the new incidents gives them their ids
        now = utcnow()
        timeline = [{"incident_id": i.id, "actor": SYSTEM, "action": "opened", "at": now,
                     "detail": {"event_id": e.event_id, "rule": d.rule}} for i, d, e in opened]
        timeline += [{"incident_id": i.id, "actor": SYSTEM, "action": "events_added", "at": now,
                      "detail": {"count": added[id(i)], "total": i.event_count}}
                     for i in touched.values() if added.get(id(i))]
        db.execute(insert(TimelineEntry), timeline)
        db.execute(insert(IncidentEvent), [{"incident_id": i.id, "event_id": eid} for i, eid in members])
        bundles = _BundleCache(db)
        for incident, draft, event in opened:
            for role in draft.notify:
                _notify(db, incident, role, draft, event, bundles)
    return list(touched.values())


def _new_incident(draft: IncidentDraft, event: RuleInput) -> Incident:
    return Incident(
        rule=draft.rule, title=draft.title[:300], params=draft.params, severity=draft.severity.value,
        clauses=list(draft.clauses), dedup_key=draft.dedup_key[:300], status=IncidentStatus.new,
        agent_id=event.agent_id, seat=event.seat, os_user=event.os_user,
        first_seen_at=event.occurred_at, last_seen_at=event.occurred_at,
        window_ends_at=event.occurred_at + timedelta(seconds=draft.window_s), event_count=1,
    )


def _notify(db: Session, incident: Incident, role: str, draft: IncidentDraft, event: RuleInput,
            bundles: _BundleCache) -> None:
    person_id = None
    to = role
    if role == "class_teacher":
        bundle = bundles.get()
        group_name = draft.params.get("group") or bundle.group_of(event.os_user)
        group = next((g for g in bundle.groups if g.name == group_name), None)
        if group is None or not group.class_teacher:
            return  # no class teacher known for this group: nobody to tell (the admin sees the incident)
        person = db.scalar(select(Person).where(Person.username == group.class_teacher))
        if person is None or person.disabled:
            return
        person_id, to = person.id, person.username
    db.add(Notification(incident_id=incident.id, person_id=person_id, role=role))
    db.add(TimelineEntry(incident_id=incident.id, actor=SYSTEM, action="notified", at=utcnow(),
                         detail={"role": role, "to": to}))
