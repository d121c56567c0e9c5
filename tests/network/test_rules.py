"""net.* events → incidents; a storm (and the same attack seen by every seat) is one incident."""

from __future__ import annotations

from datetime import UTC, datetime

from policy_server.rules import RuleInput, evaluate, load_all_rules


def ev(
    event_type: str,
    data: dict,
    *,
    agent: str = "a1",
    seat: str = "lab1-01",
    user: str | None = None,
    room: str | None = "lab1",
) -> RuleInput:
    return RuleInput(
        event_id="e",
        type=event_type,
        agent_id=agent,
        occurred_at=datetime(2025, 3, 1, tzinfo=UTC),
        data=data,
        seat=seat,
        room=room,
        os_user=user,
    )


def drafts(event: RuleInput):
    load_all_rules()
    return [d for d in evaluate(event) if d.rule == event.type]


def test_arp_spoof_seen_by_two_seats_of_a_room_is_one_incident():
    data = {
        "gateway_ip": "10.0.0.1",
        "expected_mac": "02:00:00:00:00:01",
        "seen_macs": ["02:00:00:00:00:01", "02:66:00:00:00:01"],
        "occurrences": 40,
    }
    [a] = drafts(ev("net.arp_spoof", data, agent="a1", seat="lab1-01"))
    [b] = drafts(ev("net.arp_spoof", data, agent="a2", seat="lab1-02"))
    assert a.dedup_key == b.dedup_key and a.window_s >= 3600
    assert a.severity == "high" and "000 §5.6" in a.clauses
    assert "02:66:00:00:00:01" in a.title and "02:00:00:00:00:01" not in a.title
    assert a.params["occurrences"] == 40


def test_arp_spoof_without_a_room_is_keyed_by_agent():
    data = {"gateway_ip": "10.0.0.1", "seen_macs": ["02:66:00:00:00:01"]}
    [a] = drafts(ev("net.arp_spoof", data, agent="a1", room=None))
    [b] = drafts(ev("net.arp_spoof", data, agent="a2", room=None))
    assert a.dedup_key != b.dedup_key


def test_rogue_dhcp_is_keyed_by_the_rogue_server():
    [a] = drafts(ev("net.rogue_dhcp", {"server_ip": "10.0.0.66", "server_mac": "02:66:00:00:00:02"}))
    [b] = drafts(ev("net.rogue_dhcp", {"server_ip": "10.0.0.67", "server_mac": "02:66:00:00:00:03"}))
    assert a.dedup_key != b.dedup_key and a.severity == "high"


def test_a_rogue_ipv6_router_seen_by_a_room_is_one_incident():
    data = {"src_mac": "02:66:00:00:00:03", "src_ip": "fe80::66", "router_lifetime": 1800,
            "prefixes": ["2001:db8:66::/64"], "interface": "eth0", "occurrences": 12}
    [a] = drafts(ev("net.rogue_ra", data, agent="a1", seat="lab1-01"))
    [b] = drafts(ev("net.rogue_ra", {**data, "occurrences": 3}, agent="a2", seat="lab1-02"))
    other = drafts(ev("net.rogue_ra", {**data, "src_mac": "02:66:00:00:00:04"}))[0]
    elsewhere = drafts(ev("net.rogue_ra", data, room="lab2"))[0]
    assert a.dedup_key == b.dedup_key != other.dedup_key != elsewhere.dedup_key
    assert a.severity == "high" and a.clauses == ("000 §5.6",) and a.window_s >= 3600
    assert "fe80::66" in a.title and "02:66:00:00:00:03" in a.title
    assert a.params["prefixes"] == ["2001:db8:66::/64"] and a.params["occurrences"] == 12


def test_bypass_storm_by_one_user_is_one_incident_and_the_class_teacher_is_told():
    one = drafts(ev("net.bypass", {"kind": "dns", "dst_ip": "198.51.100.53", "dst_port": 53}, user="aibek"))[
        0
    ]
    two = drafts(ev("net.bypass", {"kind": "dns", "dst_ip": "198.51.100.54", "dst_port": 53}, user="aibek"))[
        0
    ]
    vpn = drafts(ev("net.bypass", {"kind": "vpn", "detail": "WireGuard handshake initiation"}, user="aibek"))[
        0
    ]
    assert one.dedup_key == two.dedup_key != vpn.dedup_key
    assert one.severity == "medium" and vpn.severity == "high"
    assert one.notify == ("class_teacher",) and "001 §2.7" in one.clauses


def test_refused_attempts_open_an_incident_only_when_repeated_in_a_lesson_and_tell_the_class_teacher():
    kinds = ("mismatch", "raw", "tunnel", "refused")
    found = [drafts(ev("net.bypass", {"kind": k, "dst_ip": "203.0.113.9", "dst_port": 22, "occurrences": 4},
                       user="aibek"))[0] for k in kinds]
    assert len({d.dedup_key for d in found}) == 1  # one incident per seat and user, whatever was tried
    other = drafts(ev("net.bypass", {"kind": "raw"}, user="bermet"))[0]
    assert other.dedup_key != found[0].dedup_key
    for d in found:
        assert d.open_after == 3 and d.window_s == 45 * 60 and d.notify == ("class_teacher",)
        assert {"000 §5.6", "001 §2.7", "001 §2.11"} <= set(d.clauses) and d.params["occurrences"] == 4
        assert "content" not in d.params
