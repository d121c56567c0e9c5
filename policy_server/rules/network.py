"""Network-check rules (000 §5.6: detect unauthorised access in time).

The agents already fold a storm into a few events (each with `occurrences`); these
rules fold those events into one incident per attack: an ARP spoof, rogue DHCP
server or rogue IPv6 router is seen by every workstation of the room, so its key is the room (or the
agent when the room is unknown) and the attacker's identity, with an hour's window.
A bypass attempt belongs to one seat and user.
"""

from __future__ import annotations

from policy_server.rules import IncidentDraft, RuleInput, Severity, pseudonym, rule

LAN_WINDOW_S = 3600
BYPASS_WINDOW_S = 1800


def _segment(event: RuleInput) -> str:
    return f"room:{event.room}" if event.room else f"agent:{event.agent_id}"


@rule("net.arp_spoof")
def arp_spoof(event: RuleInput) -> IncidentDraft:
    gateway = str(event.data.get("gateway_ip", "?"))
    macs = [str(m) for m in event.data.get("seen_macs", [])]
    expected = event.data.get("expected_mac")
    rogue = sorted(m for m in macs if m != expected) or macs
    return IncidentDraft(
        rule="net.arp_spoof",
        title=f"ARP spoofing: {', '.join(rogue) or 'unknown MAC'} claims the gateway {gateway}",
        severity=Severity.high,
        clauses=("000 §5.6",),
        dedup_key=f"net.arp_spoof:{_segment(event)}:{gateway}",
        window_s=LAN_WINDOW_S,
        params={"gateway_ip": gateway, "seen_macs": macs, "expected_mac": expected,
                "occurrences": int(event.data.get("occurrences", 1)), "seat": event.seat},
    )


@rule("net.rogue_dhcp")
def rogue_dhcp(event: RuleInput) -> IncidentDraft:
    server = str(event.data.get("server_ip", "?"))
    mac = event.data.get("server_mac")
    return IncidentDraft(
        rule="net.rogue_dhcp",
        title=f"Rogue DHCP server {server}" + (f" ({mac})" if mac else ""),
        severity=Severity.high,
        clauses=("000 §5.6",),
        dedup_key=f"net.rogue_dhcp:{_segment(event)}:{mac or server}",
        window_s=LAN_WINDOW_S,
        params={"server_ip": server, "server_mac": mac, "offered_ip": event.data.get("offered_ip"),
                "occurrences": int(event.data.get("occurrences", 1)), "seat": event.seat},
    )


@rule("net.rogue_ra")
def rogue_ra(event: RuleInput) -> IncidentDraft:
    # The IPv6 twin of a rogue DHCP server: every host taking it as default router sends its
    # IPv6 traffic through it (a man in the middle, and a way round the IPv4-only filter).
    mac = str(event.data.get("src_mac", "?"))
    address = str(event.data.get("src_ip", "?"))
    return IncidentDraft(
        rule="net.rogue_ra",
        title=f"Rogue IPv6 router {address} ({mac})",
        severity=Severity.high,
        clauses=("000 §5.6",),
        dedup_key=f"net.rogue_ra:{_segment(event)}:{mac}",
        window_s=LAN_WINDOW_S,
        params={"src_mac": mac, "src_ip": address, "router_lifetime": event.data.get("router_lifetime"),
                "prefixes": [str(p) for p in event.data.get("prefixes", [])],
                "interface": event.data.get("interface", ""),
                "occurrences": int(event.data.get("occurrences", 1)), "seat": event.seat},
    )


_BYPASS_SEVERITY = {"vpn": Severity.high, "tor": Severity.high}
# What the workstation itself refused (the proxy's destination checks, the firewall's default
# deny): nothing got out, so one attempt may be a program's accident; repeated attempts by one
# seat and user within one lesson (the room's running lesson, else its timetable period; 45
# minutes where there is neither) are a student trying, and the class teacher is told.
_REFUSED_KINDS = {"mismatch": "a name that does not lead to its destination",
                  "raw": "a tunnel on the web ports (neither HTTP nor TLS)",
                  "tunnel": "the proxy asked for a port other than the web's",
                  "refused": "traffic the workstation's firewall refused"}
LESSON_WINDOW_S = 45 * 60
REPEATED_ATTEMPTS = 3  # events (each already folds a minute of one destination's attempts)


@rule("net.bypass")
def bypass(event: RuleInput) -> IncidentDraft:
    kind = str(event.data.get("kind", "other"))
    where = event.seat or event.hostname or event.agent_id
    if kind in _REFUSED_KINDS:
        return IncidentDraft(
            rule="net.bypass",
            title=f"Repeated attempts to get round the filter on {where} ({_REFUSED_KINDS[kind]})",
            severity=Severity.medium,
            clauses=("000 §5.6", "001 §2.11", "001 §2.7"),
            # one incident per seat and user in a lesson, whatever the ways tried
            dedup_key=f"net.bypass:refused:{event.agent_id}:{pseudonym(event.os_user)}",
            window_s=LESSON_WINDOW_S,  # only where the room has no lesson and no period then
            lesson_window=True,
            params={"kind": kind, "dst_ip": event.data.get("dst_ip"), "dst_port": event.data.get("dst_port"),
                    "detail": event.data.get("detail", ""),
                    "occurrences": int(event.data.get("occurrences", 1)), "seat": event.seat},
            notify=("class_teacher",),
            open_after=REPEATED_ATTEMPTS,
        )
    return IncidentDraft(
        rule="net.bypass",
        title=f"Filter bypass attempt ({kind}) on {where}",
        severity=_BYPASS_SEVERITY.get(kind, Severity.medium),
        clauses=("000 §5.6", "001 §2.11", "001 §2.7"),
        # one incident per user (or seat) and kind; destinations vary within a storm
        dedup_key=f"net.bypass:{event.agent_id}:{pseudonym(event.os_user)}:{kind}",
        window_s=BYPASS_WINDOW_S,
        params={"kind": kind, "dst_ip": event.data.get("dst_ip"), "dst_port": event.data.get("dst_port"),
                "detail": event.data.get("detail", ""), "occurrences": int(event.data.get("occurrences", 1)),
                "seat": event.seat},
        # a deliberate attempt to get round the filter: the class teacher is told (001 §2.7)
        notify=("class_teacher",),
    )
