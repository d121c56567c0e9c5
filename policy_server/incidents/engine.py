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

from sqlalchemy import insert, select
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
            by_key[draft.dedup_key].append((draft, event))
    if not by_key:
        return []
    bundles = _BundleCache(db)
    touched: list[Incident] = []
    links: list[dict[str, object]] = []
    for key, pairs in by_key.items():
        pairs.sort(key=lambda p: p[1].occurred_at)
        incident = db.scalar(
            select(Incident)
            .where(Incident.dedup_key == key, Incident.status != IncidentStatus.resolved,
                   Incident.window_ends_at >= pairs[0][1].occurred_at)
            .order_by(Incident.id.desc()).limit(1)
        )
        added = 0
        for draft, event in pairs:
            if incident is None or event.occurred_at > incident.window_ends_at:
                if incident is not None and added:
                    _timeline_added(db, incident, added)
                incident = _open(db, draft, event, bundles)
                touched.append(incident)
                added = 0
            else:
                incident.event_count += 1
                incident.last_seen_at = max(incident.last_seen_at, event.occurred_at)
                incident.severity = _max_severity(incident.severity, draft.severity.value)
                added += 1
                if incident not in touched:
                    touched.append(incident)
            links.append({"incident_id": incident.id, "event_id": event.event_id})
        if incident is not None and added:
            _timeline_added(db, incident, added)
    db.execute(insert(IncidentEvent), links)
    return touched


def _open(db: Session, draft: IncidentDraft, event: RuleInput, bundles: _BundleCache) -> Incident:
    incident = Incident(
        rule=draft.rule, title=draft.title[:300], params=draft.params, severity=draft.severity.value,
        clauses=list(draft.clauses), dedup_key=draft.dedup_key[:300], status=IncidentStatus.new,
        agent_id=event.agent_id, seat=event.seat, os_user=event.os_user,
        first_seen_at=event.occurred_at, last_seen_at=event.occurred_at,
        window_ends_at=event.occurred_at + timedelta(seconds=draft.window_s), event_count=1,
    )
    db.add(incident)
    db.flush()
    db.add(TimelineEntry(incident_id=incident.id, actor=SYSTEM, action="opened", at=utcnow(),
                         detail={"event_id": event.event_id, "rule": draft.rule}))
    for role in draft.notify:
        _notify(db, incident, role, draft, event, bundles)
    return incident


def _timeline_added(db: Session, incident: Incident, count: int) -> None:
    db.add(TimelineEntry(incident_id=incident.id, actor=SYSTEM, action="events_added", at=utcnow(),
                         detail={"count": count, "total": incident.event_count}))


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
