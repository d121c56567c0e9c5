"""An ongoing condition (a part of the agent down, the antivirus not working) is one incident
with a start, a count and a last-seen time, not one timeline line per heartbeat; it closes
itself with a note when the agent reports it gone (issue 11).  SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from policy_server import protocol
from policy_server.db.models import Incident, TimelineEntry

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def beat(at: datetime, av_state: str) -> protocol.EventEnvelope:
    collectors = {
        "antivirus": {"state": av_state, "detail": "antivirus not working: clamd_unreachable"},
        "usb": {"state": "ok", "detail": ""},
    }
    return protocol.make_event(
        "agent.heartbeat", {"agent_version": "1", "collectors": collectors}, occurred_at=at
    )


def test_collector_down_is_one_incident_that_closes_itself(api):
    _, auth = api.enroll()
    # 3 hours of heartbeats every 10 minutes, in separate batches: far past the 1 h window
    for minute in range(0, 180, 10):
        api.post(auth, beat(T0 + timedelta(minutes=minute), "failed"))
    with api.db() as db:
        (incident,) = db.scalars(select(Incident).where(Incident.rule == "agent.collector_failed"))
        assert incident.event_count == 18 and incident.status == "new"
        assert incident.first_seen_at == T0 and incident.last_seen_at == T0 + timedelta(minutes=170)
        actions = list(
            db.scalars(select(TimelineEntry.action).where(TimelineEntry.incident_id == incident.id))
        )
        assert "events_added" not in actions and actions.count("opened") == 1
        incident_id = incident.id
    api.post(auth, beat(T0 + timedelta(minutes=180), "ok"))
    with api.db() as db:
        incident = db.get(Incident, incident_id)
        assert incident.status == "resolved" and incident.resolution is None
        # stored as a code and params, said in the reader's language (not English text)
        assert incident.resolution_code == "condition_cleared"
        assert incident.resolution_params == {"cleared_at": (T0 + timedelta(minutes=180)).isoformat()}
        last = db.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.incident_id == incident_id)
            .order_by(TimelineEntry.id.desc())
        ).first()
        assert (
            last.action == "resolved"
            and last.actor == "system"
            and last.detail["note"] == "condition_cleared"
        )
    # it comes back: a new incident (the old one stays resolved)
    api.post(auth, beat(T0 + timedelta(minutes=190), "failed"))
    with api.db() as db:
        statuses = sorted(
            db.scalars(select(Incident.status).where(Incident.rule == "agent.collector_failed"))
        )
        assert statuses == ["new", "resolved"]


def test_antivirus_problem_closes_when_signatures_are_fresh(api):
    _, auth = api.enroll()
    stale = {"clamd_reachable": True, "signature_version": "1", "problem": "signatures_stale"}
    api.post(auth, protocol.make_event("av.health", stale, occurred_at=T0))
    api.post(auth, protocol.make_event("av.health", stale, occurred_at=T0 + timedelta(hours=20)))
    api.post(auth, protocol.make_event("av.health", stale, occurred_at=T0 + timedelta(hours=40)))
    with api.db() as db:
        (incident,) = db.scalars(select(Incident).where(Incident.rule == "av.health"))
        assert incident.event_count == 3  # one incident past the first day's window
    api.post(
        auth,
        protocol.make_event(
            "av.health",
            {"clamd_reachable": True, "signature_version": "2"},
            occurred_at=T0 + timedelta(hours=41),
        ),
    )
    with api.db() as db:
        assert db.scalar(select(Incident.status).where(Incident.rule == "av.health")) == "resolved"


def test_the_auto_close_resolution_is_said_in_the_readers_language(api):
    """Stored as a code and params; the API (Accept-Language) and the page (the reader's
    language) say it in ky/ru/en, and the director sees it too (it names nobody)."""
    _, auth = api.enroll()
    api.post(auth, beat(T0, "failed"))
    api.post(auth, beat(T0 + timedelta(minutes=10), "ok"))
    with api.db() as db:
        (incident_id,) = db.scalars(select(Incident.id).where(Incident.rule == "agent.collector_failed"))
    api.user("admin", "boss")
    admin = api.login("boss")
    said = {}
    for language in ("ky", "ru", "en"):
        answer = api.client.get(f"/api/v1/incidents/{incident_id}",
                                headers={**admin, "Accept-Language": language})
        assert answer.status_code == 200, answer.text
        said[language] = answer.json()["resolution"]
        assert answer.json()["resolution_code"] == "condition_cleared"
    assert said["en"].startswith("The condition cleared by itself: at ")
    assert said["ru"].startswith("Состояние устранилось само: в ")
    assert said["ky"].startswith("Абал өзүнөн өзү оңолду: ")
    page = api.client.get(f"/incidents/{incident_id}?lang=ru")
    assert page.status_code == 200 and 'id="incident-resolution">Состояние устранилось само' in page.text
    api.user("director", "head")
    director = api.login("head")
    answer = api.client.get(f"/api/v1/incidents/{incident_id}", headers={**director, "Accept-Language": "ky"})
    assert answer.json()["resolution"] == said["ky"]
