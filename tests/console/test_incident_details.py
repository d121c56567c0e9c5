"""Incident pages show event details per type in the reader's language: no Python data, no None;
a USB or integrity event carries the decision buttons; a cleared condition's note is translated."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from policy_server.db.models import Event, Incident, IncidentEvent, TimelineEntry
from tests.web.conftest import login


def _incident_with(school, agent_id, type_, data, rule) -> int:
    now = datetime.now(UTC)
    event_id = str(uuid.uuid4())
    with school.session() as db:
        db.add(
            Event(
                id=event_id, agent_id=agent_id, type=type_, occurred_at=now, data=data, clauses=["000 §3.2"]
            )
        )
        inc = Incident(
            rule=rule,
            title="t",
            params={},
            severity="high",
            clauses=[],
            dedup_key=f"{rule}:{event_id}",
            status="new",
            agent_id=agent_id,
            first_seen_at=now,
            last_seen_at=now,
            window_ends_at=now,
            event_count=1,
        )
        db.add(inc)
        db.flush()
        db.add(IncidentEvent(incident_id=inc.id, event_id=event_id))
        db.add(TimelineEntry(incident_id=inc.id, actor="system", action="opened", detail={}, at=now))
        db.add(
            TimelineEntry(
                incident_id=inc.id,
                actor="system",
                action="resolved",
                at=now,
                detail={"note": "condition_cleared", "cleared_at": now.isoformat(), "reason": "x"},
            )
        )
        db.commit()
        return inc.id


def test_heartbeat_details_are_humane_in_each_language(client, school):
    agent = school.workstation(hostname="pc-d", room="Lab D", seat="d-01")
    heartbeat = {
        "agent_version": "0.3",
        "policy_version": None,
        "outbox_depth": 0,
        "collectors": {
            "antivirus": {"state": "failed", "detail": "antivirus not working: clamd_missing"},
            "usb": {"state": "ok", "detail": "2 devices"},
        },
    }
    incident_id = _incident_with(school, agent, "agent.heartbeat", heartbeat, "agent.collector_failed")
    login(client, school.person("admin"))
    ru = client.get(f"/incidents/{incident_id}?lang=ru").text
    ky = client.get(f"/incidents/{incident_id}?lang=ky").text
    en = client.get(f"/incidents/{incident_id}?lang=en").text
    for text in (ru, ky, en):
        assert "None" not in text and "{&#39;" not in text and "{'" not in text
    assert "Служба антивируса (clamd) не установлена." in ru and "Контроль USB" in ru
    assert "Антивирус кызматы (clamd) орнотулган эмес." in ky
    assert "Not working: Antivirus" in en
    assert "the agent reported it gone" in en and "агент сообщил" in ru


def test_usb_incident_has_the_decision_buttons(client, school):
    agent = school.workstation(hostname="pc-u", room="Lab D", seat="d-02")
    device = {"vendor_id": "0951", "product_id": "1666", "serial": "S1", "product": "DataTraveler"}
    incident_id = _incident_with(
        school, agent, "usb.blocked", {"device": device, "reason": ""}, "usb.blocked"
    )
    login(client, school.person("admin"))
    page = client.get(f"/incidents/{incident_id}?lang=en").text
    assert 'action="/approvals/usb"' in page and "Allow this model" in page
    teacher = school.person("teacher")
    client.cookies.clear()
    login(client, teacher)
    assert 'action="/approvals/usb"' not in client.get(f"/incidents/{incident_id}").text
