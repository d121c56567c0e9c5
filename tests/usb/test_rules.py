"""Server-side USB rule (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from policy_server.rules import RuleInput, Severity, evaluate, load_all_rules

load_all_rules()


def blocked(device, reason="not_on_allow_list", agent="a1"):
    return RuleInput(
        event_id="e",
        type="usb.blocked",
        agent_id=agent,
        occurred_at=datetime.now(UTC),
        data={"device": device, "reason": reason},
        seat="lab2-03",
    )


STICK = {"vendor_id": "0781", "product_id": "5567", "serial": "4C53", "kinds": ["storage"]}


def test_blocked_storage_is_a_medium_incident_per_device_and_seat():
    [draft] = evaluate(blocked(STICK))
    assert draft.severity == Severity.medium and draft.clauses == ("000 §6.5",)
    assert "storage device 0781:5567" in draft.title and "lab2-03" in draft.title
    assert draft.params["serial"] == "4C53"
    other = evaluate(blocked({**STICK, "serial": "OTHER"}))[0]
    assert other.dedup_key != draft.dedup_key


def test_badusb_is_high():
    device = {"vendor_id": "03eb", "product_id": "2401", "kinds": ["hid", "storage"]}
    [draft] = evaluate(blocked(device, "badusb_storage_with_keyboard"))
    assert draft.severity == Severity.high and "BadUSB" in draft.title


def test_phone_tethering_is_named():
    [draft] = evaluate(blocked({"vendor_id": "18d1", "product_id": "4ee3", "kinds": ["network", "rndis"]}))
    assert "tethering" in draft.title
