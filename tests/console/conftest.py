"""The responsible person's console (issue 11): the web fixtures, reused, and `add_event`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from policy_server.db.models import Event, Incident, IncidentEvent, TimelineEntry
from tests.web.conftest import client, csrf_of, login, school, web_app  # noqa: F401


def add_event(the_school, agent_id: str, type_: str, data: dict, *, at: datetime | None = None,
              rule: str | None = None, clauses: tuple[str, ...] = ()) -> tuple[str, int | None]:
    """An agent's event as ingest stores it and, with `rule`, the incident it opened (linked,
    with the timeline's "opened" line): (event id, incident id or None)."""
    event_id, at = str(uuid.uuid4()), at or datetime.now(UTC)
    with the_school.session() as db:
        db.add(Event(id=event_id, agent_id=agent_id, type=type_, occurred_at=at, seat=None, data=data,
                     clauses=list(clauses)))
        incident_id = None
        if rule:
            incident = Incident(rule=rule, title=type_, params={}, severity="high", clauses=[],
                                dedup_key=f"{rule}:{event_id}", status="new", agent_id=agent_id,
                                first_seen_at=at, last_seen_at=at, window_ends_at=at, event_count=1)
            db.add(incident)
            db.flush()
            incident_id = incident.id
            db.add(IncidentEvent(incident_id=incident_id, event_id=event_id))
            db.add(TimelineEntry(incident_id=incident_id, actor="system", action="opened", detail={}, at=at))
        db.commit()
    return event_id, incident_id
