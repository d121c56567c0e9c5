"""Incident pages show event details per type in the reader's language: no Python data, no None;
a USB or integrity event carries the decision buttons; a cleared condition's note is translated."""

from __future__ import annotations

from datetime import UTC, datetime

from policy_server.db.models import TimelineEntry
from tests.console.conftest import add_event
from tests.web.conftest import login


def _incident_with(school, agent_id, type_, data, rule) -> int:
    """An incident of `rule` from one event, resolved when its condition cleared."""
    now = datetime.now(UTC)
    _event, incident_id = add_event(school, agent_id, type_, data, at=now, rule=rule, clauses=("000 §3.2",))
    with school.session() as db:
        db.add(
            TimelineEntry(
                incident_id=incident_id,
                actor="system",
                action="resolved",
                at=now,
                detail={"note": "condition_cleared", "cleared_at": now.isoformat(), "reason": "x"},
            )
        )
        db.commit()
    return incident_id


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
