"""USB rules (000 §6.5: no personal mobile devices or storage)."""

from __future__ import annotations

from policy_server.rules import IncidentDraft, RuleInput, Severity, rule

_KIND_WORDS = {
    "storage": "storage device",
    "phone": "phone",
    "network": "network adapter",
    "rndis": "phone tethering adapter",
    "wireless": "wireless adapter",
    "vendor": "device",
}


@rule("usb.blocked")
def device_blocked(event: RuleInput) -> IncidentDraft:
    device = event.data.get("device") or {}
    reason = str(event.data.get("reason", ""))
    kinds = list(device.get("kinds") or [])
    badusb = reason == "badusb_storage_with_keyboard"
    what = (
        "storage device that also acts as a keyboard (BadUSB)"
        if badusb
        else next(
            (
                _KIND_WORDS[k]
                for k in ("storage", "phone", "rndis", "network", "wireless", "vendor")
                if k in kinds
            ),
            "USB device",
        )
    )
    ident = f"{device.get('vendor_id', '????')}:{device.get('product_id', '????')}"
    where = event.seat or event.hostname or event.agent_id
    return IncidentDraft(
        rule="usb.blocked",
        title=f"Blocked {what} {ident} on {where}",
        # a device pretending to be a keyboard is an attack, not a forgotten phone
        severity=Severity.high if badusb else Severity.medium,
        clauses=("000 §6.5",),
        # the same device plugged again and again at one seat within an hour is one incident
        dedup_key=f"usb.blocked:{event.agent_id}:{ident}:{device.get('serial') or ''}",
        window_s=3600,
        params={
            "seat": event.seat,
            "vendor_id": device.get("vendor_id"),
            "product_id": device.get("product_id"),
            "serial": device.get("serial"),
            "product": device.get("product"),
            "kinds": kinds,
            "reason": reason,
        },
    )
