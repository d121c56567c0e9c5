"""Event details in the reader's language, per event type (issue 11).

`describe(language, event_type, data)` gives a short summary and a list of (label, value)
rows: labels and known values (part names, states, change kinds, failure reasons) are
translated; nothing is shown as Python data and nothing as a raw None ("—" instead).
Values the agent wrote in its own words (a file path, a device name) are shown as they are.

    describe("ru", "av.health", {"clamd_reachable": False, "problem": "clamd_unreachable"})
    -> Described(summary="Антивирус не отвечает…", rows=[("Служба антивируса", "не отвечает"), …])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from policy_server.web import i18n
from policy_server.web.i18n import N_

EVENT_NAMES = {
    "agent.heartbeat": N_("Heartbeat"),
    "agent.events_dropped": N_("Events dropped"),
    "agent.upgrade": N_("Agent upgrade"),
    "web.report": N_("Page reported by a student"),
    "web.blocked": N_("Page blocked"),
    "web.alert": N_("Dangerous search or page"),
    "web.unblock_request": N_("Request to unblock a page"),
    "web.usage": N_("Web use"),
    "isuo.session": N_("ISUO session"),
    "av.health": N_("Antivirus state"),
    "av.scan.started": N_("Scan started"),
    "av.scan.progress": N_("Scan progress"),
    "av.scan.completed": N_("Scan completed"),
    "av.threat": N_("Threat found"),
    "usb.connected": N_("USB device connected"),
    "usb.blocked": N_("USB device blocked"),
    "usb.allowed": N_("USB device allowed"),
    "integrity.changed": N_("Program file changed"),
    "integrity.baseline": N_("Integrity baseline sealed"),
    "integrity.tampered": N_("Integrity baseline tampered with"),
    "software.changed": N_("Software installed or removed"),
    "idle.locked": N_("Screen locked when idle"),
    "idle.lock_failed": N_("Screen failed to lock"),
    "net.arp_spoof": N_("Network attack: gateway impersonated (ARP)"),
    "net.rogue_dhcp": N_("Network attack: rogue DHCP server"),
    "net.rogue_ra": N_("Network attack: rogue IPv6 router"),
    "net.bypass": N_("Attempt to bypass the filter"),
}

PART_NAMES = {
    "antivirus": N_("Antivirus"),
    "heartbeat": N_("Heartbeat"),
    "idle": N_("Idle lock"),
    "integrity": N_("Integrity check"),
    "network": N_("Network watch"),
    "proxy": N_("Web filter"),
    "usb": N_("USB control"),
}
STATES = {"ok": N_("working"), "degraded": N_("working with a problem"), "failed": N_("not working"),
          "stopped": N_("stopped"), "starting": N_("starting")}
AV_PROBLEMS = {
    "clamd_missing": N_("The antivirus service (clamd) is not installed."),
    "clamd_unreachable": N_("The antivirus service (clamd) does not answer."),
    "signatures_stale": N_("The antivirus signatures are out of date."),
    "signatures_unknown": N_("The date of the antivirus signatures is unknown."),
}
SCAN_KINDS = {"full": N_("full scan"), "media": N_("removable media"), "download": N_("downloaded file")}
CHANGE_KINDS = {"added": N_("added"), "modified": N_("modified"), "removed": N_("removed"),
                "permissions": N_("permissions changed")}
BASELINE_REASONS = {
    "created": N_("first baseline"), "accepted": N_("after an accepted change"),
    "package_update": N_("after a package update"), "paths_changed": N_("watched folders changed"),
    "rebuilt": N_("rebuilt"), "rebuilt_after_tamper": N_("rebuilt after tampering"),
    "verified": N_("verified"),
}
LOCK_REASONS = {"idle": N_("idle for too long"), "isuo_end": N_("an ISUO session ended"),
                "isuo_idle": N_("idle during an ISUO session"),
                "no_helper": N_("no screen-lock helper was running")}
AREAS = {"program": N_("program folder"), "drop": N_("folder where users can put files")}
# `net.bypass` kinds (policy_server.protocol.NetBypass): what a person reads for each
BYPASS_KINDS = {
    "dns": N_("DNS to a resolver the school does not use"),
    "dot": N_("encrypted DNS (DNS over TLS or QUIC)"),
    "doh": N_("encrypted DNS over HTTPS"),
    "vpn": N_("a VPN"),
    "tor": N_("Tor"),
    "quic": N_("QUIC (HTTP/3) around the filter"),
    "other": N_("another way around the filter"),
    "mismatch": N_("a name that does not lead to its destination"),
    "raw": N_("a tunnel on the web ports (neither HTTP nor TLS)"),
    "tunnel": N_("the proxy asked for a port other than the web's"),
    "refused": N_("traffic the workstation's firewall refused"),
}


@dataclass
class Described:
    summary: str
    rows: list[tuple[str, str]] = field(default_factory=list)


class _T:
    """Translate in one language; format values for a person."""

    def __init__(self, language: str) -> None:
        self.language = language

    def __call__(self, message: str, **params: object) -> str:
        return i18n.translate(self.language, message, **params)

    def value(self, value: Any) -> str:
        if value is None or value == "" or value == [] or value == {}:
            return "—"
        if isinstance(value, bool):
            return self(N_("yes")) if value else self(N_("no"))
        if isinstance(value, datetime):
            return i18n.format_datetime(value, self.language)
        if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
            try:
                return i18n.format_datetime(datetime.fromisoformat(value), self.language)
            except ValueError:
                return value
        if isinstance(value, float):
            return f"{value:.1f}".rstrip("0").rstrip(".")
        if isinstance(value, Mapping):
            return "; ".join(f"{k}: {self.value(v)}" for k, v in value.items())
        if isinstance(value, list | tuple):
            return ", ".join(self.value(v) for v in value)
        return str(value)

    def pick(self, table: Mapping[str, str], value: Any) -> str:
        if value in table:
            return self(table[value])
        return self.value(value)


def _parts(t: _T, collectors: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name in sorted(collectors):
        health = collectors[name] if isinstance(collectors[name], Mapping) else {}
        state = t.pick(STATES, health.get("state"))
        detail = str(health.get("detail") or "")
        problem = next((t(text) for code, text in AV_PROBLEMS.items() if code in detail), "")
        shown = state + (f" — {problem}" if problem else "")
        if health.get("state") not in (None, "ok") and detail and not problem:
            shown += f" ({detail})"
        rows.append((t.pick(PART_NAMES, name), shown))
    return rows


def _heartbeat(t: _T, d: Mapping[str, Any]) -> Described:
    collectors = d.get("collectors") or {}
    bad = [t.pick(PART_NAMES, n) for n, h in sorted(collectors.items())
           if isinstance(h, Mapping) and h.get("state") not in (None, "ok")]
    summary = t(N_("Not working: %(parts)s"), parts=", ".join(bad)) if bad else t(N_("All parts working."))
    rows = [(t(N_("Agent version")), t.value(d.get("agent_version"))),
            (t(N_("Policy version")), t.value(d.get("policy_version"))),
            (t(N_("Events waiting to be sent")), t.value(d.get("outbox_depth")))]
    return Described(summary, rows + _parts(t, collectors))


def _av_health(t: _T, d: Mapping[str, Any]) -> Described:
    problem = d.get("problem")
    summary = t.pick(AV_PROBLEMS, problem) if problem else t(N_("The antivirus works; signatures are fresh."))
    return Described(summary, [
        (t(N_("Antivirus service answers")), t.value(d.get("clamd_reachable"))),
        (t(N_("Signature version")), t.value(d.get("signature_version"))),
        (t(N_("Signature date")), t.value(d.get("signature_date"))),
        (t(N_("Signature age, days")), t.value(d.get("signature_age_days"))),
    ])


def _scan(t: _T, d: Mapping[str, Any]) -> Described:
    kind = t.pick(SCAN_KINDS, d.get("kind"))
    threats = d.get("threats")
    if threats is not None:
        summary = t(N_("%(kind)s: %(files)s files, %(threats)s threats"), kind=kind,
                    files=t.value(d.get("files")), threats=threats)
    else:
        summary = kind
    rows = [(t(N_("Kind")), kind)]
    for key, label in (("files", N_("Files")), ("threats", N_("Threats")), ("errors", N_("Errors")),
                       ("duration_s", N_("Duration, s")), ("signature_version", N_("Signature version")),
                       ("started_at", N_("Started")), ("path", N_("Path")), ("done_files", N_("Files done"))):
        if key in d:
            rows.append((t(label), t.value(d.get(key))))
    return Described(summary, rows)


def _threat(t: _T, d: Mapping[str, Any]) -> Described:
    return Described(t(N_("Threat %(name)s in %(path)s"), name=t.value(d.get("signature")),
                       path=t.value(d.get("path"))),
                     [(t(N_("File")), t.value(d.get("path"))), (t(N_("Threat")), t.value(d.get("signature"))),
                      (t(N_("Found by")), t.pick(SCAN_KINDS, d.get("source"))),
                      (t(N_("Quarantined")), t.value(bool(d.get("quarantined"))))])


def _lock(t: _T, d: Mapping[str, Any]) -> Described:
    reason = t.pick(LOCK_REASONS, d.get("reason", "idle"))
    rows = [(t(N_("Why a lock was due")), reason)]
    if d.get("idle_s") is not None:
        rows.append((t(N_("Idle, minutes")), t.value(round(float(d["idle_s"]) / 60, 1))))
    if d.get("error"):
        rows.append((t(N_("Error")), str(d["error"])))
    return Described(reason, rows)


def _software(t: _T, d: Mapping[str, Any]) -> Described:
    rows = [(t(N_("Installed")), t.value(d.get("installed"))), (t(N_("Removed")), t.value(d.get("removed"))),
            (t(N_("Upgraded")), t.value(d.get("upgraded")))]
    return Described("", rows)


def _web(t: _T, d: Mapping[str, Any]) -> Described:
    rows = [(t(N_("Address")), t.value(d.get("url") or d.get("host")))]
    if d.get("categories"):
        rows.append((t(N_("Categories")), t.value(d.get("categories"))))
    for key, label in (("comment", N_("Comment")), ("reason", N_("Reason")), ("query", N_("Search"))):
        if d.get(key):
            rows.append((t(label), t.value(d.get(key))))
    return Described(t.value(d.get("host") or d.get("url")), rows)


def _tampered(t: _T, d: Mapping[str, Any]) -> Described:
    return Described(t(N_("The integrity baseline was changed outside Kalkan.")),
                     [(t(N_("Detail")), t.value(d.get("detail")))])


def _usb(t: _T, d: Mapping[str, Any]) -> Described:
    dev = d.get("device") or {}
    name = " ".join(str(x) for x in (dev.get("manufacturer"), dev.get("product")) if x) or t(N_("USB device"))
    ids = f"{dev.get('vendor_id', '????')}:{dev.get('product_id', '????')}"
    return Described(f"{name} ({ids})", [
        (t(N_("Device")), name), (t(N_("Vendor:product")), ids),
        (t(N_("Serial number")), t.value(dev.get("serial"))),
        (t(N_("Kind")), t.value(dev.get("kinds"))),
        (t(N_("Reason")), t.value(d.get("reason"))),
    ])


def _integrity(t: _T, d: Mapping[str, Any]) -> Described:
    change = t.pick(CHANGE_KINDS, d.get("change"))
    package = d.get("package")
    summary = t(N_("%(path)s: %(change)s"), path=t.value(d.get("path")), change=change)
    rows = [(t(N_("File")), t.value(d.get("path"))), (t(N_("Change")), change),
            (t(N_("Package")), t.value(package) if package else t(N_("not from a package"))),
            (t(N_("Made by the package manager")), t.value(bool(d.get("by_package_manager")))),
            (t(N_("Where")), t.pick(AREAS, d.get("area", "program")))]
    if d.get("mtime_restored"):
        rows.append((t(N_("Warning")), t(N_("the file's time was set back to hide the change"))))
    return Described(summary, rows)


def _baseline(t: _T, d: Mapping[str, Any]) -> Described:
    return Described(t(N_("Baseline no. %(seq)s: %(files)s files"), seq=t.value(d.get("seq")),
                       files=t.value(d.get("files"))),
                     [(t(N_("Why")), t.pick(BASELINE_REASONS, d.get("reason"))),
                      (t(N_("Files")), t.value(d.get("files"))),
                      (t(N_("Folders")), t.value(d.get("roots")))])


def _bypass(t: _T, d: Mapping[str, Any]) -> Described:
    kind = t.pick(BYPASS_KINDS, d.get("kind"))
    port = d.get("dst_port")
    where = t.value(d.get("dst_ip")) + (f" : {port}" if port not in (None, "") else "")
    rows = [(t(N_("Kind")), kind), (t(N_("Destination")), where),
            (t(N_("Attempts")), t.value(d.get("occurrences", 1)))]
    if d.get("detail"):
        rows.append((t(N_("Detail")), t.value(d.get("detail"))))
    return Described(t(N_("%(kind)s: %(where)s"), kind=kind, where=where), rows)


def _upgrade(t: _T, d: Mapping[str, Any]) -> Described:
    from policy_server.upgrades.texts import REASON_NAMES, STATE_NAMES

    state = t.pick(STATE_NAMES, d.get("state"))
    summary = t(N_("%(from_version)s → %(to_version)s: %(state)s"), state=state,
                from_version=t.value(d.get("from_version")), to_version=t.value(d.get("to_version")))
    rows = [(t(N_("Rollout no.")), t.value(d.get("rollout"))), (t(N_("Upgrade result")), state),
            (t(N_("From version")), t.value(d.get("from_version"))),
            (t(N_("To version")), t.value(d.get("to_version")))]
    if d.get("reason_code"):
        rows.append((t(N_("Why")), t.pick(REASON_NAMES, d.get("reason_code"))))
    if d.get("reason"):  # the package manager's own words: not translated, shown as it said them
        rows.append((t(N_("What the package manager said")), str(d["reason"])))
    return Described(summary, rows)


def _generic(t: _T, d: Mapping[str, Any]) -> Described:
    rows = [(key.replace("_", " "), t.value(value)) for key, value in d.items()]
    return Described("", rows)


DESCRIBERS: dict[str, Callable[[_T, Mapping[str, Any]], Described]] = {
    "agent.heartbeat": _heartbeat,
    "av.health": _av_health,
    "av.scan.started": _scan,
    "av.scan.progress": _scan,
    "av.scan.completed": _scan,
    "av.threat": _threat,
    "usb.connected": _usb,
    "usb.blocked": _usb,
    "usb.allowed": _usb,
    "integrity.changed": _integrity,
    "integrity.baseline": _baseline,
    "integrity.tampered": _tampered,
    "idle.locked": _lock,
    "idle.lock_failed": _lock,
    "software.changed": _software,
    "web.blocked": _web,
    "web.report": _web,
    "web.alert": _web,
    "web.unblock_request": _web,
    "net.bypass": _bypass,
    "agent.upgrade": _upgrade,
}

# Incident params whose values are codes: the title shows them in the reader's language.
TITLE_PARAM_VALUES: dict[str, dict[str, Mapping[str, str]]] = {
    "net.bypass": {"kind": BYPASS_KINDS},
}


TIMELINE_NOTES = {
    "condition_cleared": N_("The condition cleared by itself: at %(when)s the agent reported it gone."),
}


def timeline_note(language: str, detail: Mapping[str, Any]) -> str:
    """A system note of the incident timeline in the reader's language."""
    text = TIMELINE_NOTES[detail["note"]]
    return i18n.translate(language, text, when=_T(language).value(detail.get("cleared_at")))


def event_name(language: str, event_type: str) -> str:
    return i18n.translate(language, EVENT_NAMES[event_type]) if event_type in EVENT_NAMES else event_type


def describe(language: str, event_type: str, data: Mapping[str, Any] | None) -> Described:
    t = _T(language)
    try:
        return DESCRIBERS.get(event_type, _generic)(t, data or {})
    except (AttributeError, TypeError, ValueError, KeyError):
        return _generic(t, data or {})
