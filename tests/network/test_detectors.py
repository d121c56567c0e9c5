"""The pure detectors over crafted packets: each attack found, normal traffic quiet."""

from __future__ import annotations

import pytest

from agent.network.detectors import Detectors, NetworkConfig
from agent.network.packets import ArpClaim, DhcpServerReply, Outbound, parse
from policy_server.protocol import NetworkSection
from tests.network import frames as f

CONFIG = NetworkConfig.from_section(NetworkSection(**f.policy_network()), local_ips=[f.WS_IP])


def run(packets, config=CONFIG):
    detectors = Detectors(config)
    findings = []
    for t, packet in enumerate(packets):
        observation = parse(packet)
        if observation is not None and (finding := detectors.observe(observation, float(t))):
            findings.append(finding)
    return findings


def test_normal_traffic_raises_nothing():
    assert run(f.normal_traffic()) == []


def test_parse_keeps_only_the_facts():
    assert parse(f.arp_reply(f.GW_IP, f.ROGUE_MAC)) == ArpClaim(f.GW_IP, f.ROGUE_MAC, reply=True)
    assert parse(f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC)) == DhcpServerReply(
        f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC, "10.77.0.50", "offer"
    )
    syn = parse(f.tcp_syn("203.0.113.7", 9001))
    assert isinstance(syn, Outbound) and (syn.proto, syn.dst_port) == ("tcp", 9001)
    assert parse(f.tcp_data("203.0.113.10", 443)) is None
    assert parse(f.dhcp_discover()) is not None and parse(f.dhcp_discover()).proto == "udp"


def test_arp_reply_from_a_foreign_mac_for_the_gateway_is_a_spoof():
    [finding] = run([f.arp_reply(f.GW_IP, f.GW_MAC), f.arp_reply(f.GW_IP, f.ROGUE_MAC)])
    assert finding.event_type == "net.arp_spoof"
    assert finding.data == {
        "gateway_ip": f.GW_IP,
        "expected_mac": f.GW_MAC,
        "seen_macs": sorted([f.GW_MAC, f.ROGUE_MAC]),
    }


def test_gratuitous_arp_request_claiming_the_gateway_is_a_spoof_too():
    [finding] = run([f.arp_request(f.GW_IP, f.ROGUE_MAC)])
    assert finding.event_type == "net.arp_spoof"


def test_without_configured_macs_a_second_mac_claiming_the_gateway_is_reported():
    config = NetworkConfig.from_section(NetworkSection(gateway_ip=f.GW_IP))
    findings = run([f.arp_reply(f.GW_IP, f.GW_MAC)] * 3 + [f.arp_reply(f.GW_IP, f.ROGUE_MAC)], config)
    [finding] = findings
    assert finding.data["expected_mac"] == f.GW_MAC and f.ROGUE_MAC in finding.data["seen_macs"]


def test_arp_for_other_hosts_is_ignored():
    assert run([f.arp_reply("10.77.0.9", f.ROGUE_MAC), f.arp_reply("10.77.0.10", f.GW_MAC)]) == []


def test_rogue_dhcp_offer_and_ack_are_found():
    findings = run(
        [
            f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC),
            f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC, ack=True),
        ]
    )
    assert [x.event_type for x in findings] == ["net.rogue_dhcp"] * 2
    assert findings[0].data == {
        "server_ip": f.ROGUE_DHCP_IP,
        "server_mac": f.ROGUE_DHCP_MAC,
        "offered_ip": "10.77.0.50",
    }


def test_without_a_dhcp_list_a_second_server_is_reported():
    config = NetworkConfig.from_section(NetworkSection())
    findings = run([f.dhcp_offer(f.GW_IP, f.GW_MAC), f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC)], config)
    assert [x.data["server_ip"] for x in findings] == [f.ROGUE_DHCP_IP]


@pytest.mark.parametrize(
    "packet, kind, detail",
    [
        (f.dns_query(f.FOREIGN_DNS), "dns", "resolver not in the policy"),
        (f.tcp_syn(f.FOREIGN_DNS, 53), "dns", "DNS over TCP"),
        (f.tcp_syn("198.51.100.1", 853), "dot", "DNS over TLS"),
        (f.wireguard_initiation(), "vpn", "WireGuard"),
        (f.wireguard_initiation(dport=443), "vpn", "WireGuard"),
        (f.openvpn_reset(), "vpn", "OpenVPN"),
        (f.openvpn_reset(dport=5000), "vpn", "OpenVPN"),
        (f.tcp_syn("203.0.113.6", 1194), "vpn", "OpenVPN"),
        (f.tcp_syn("203.0.113.8", 1723), "vpn", "PPTP"),
        (f.tcp_syn("203.0.113.7", 9001), "tor", "Tor"),
    ],
)
def test_each_bypass_is_classified(packet, kind, detail):
    [finding] = run([packet])
    assert finding.event_type == "net.bypass"
    assert finding.data["kind"] == kind and detail in finding.data["detail"]
    assert finding.local is not None and finding.local[1] == f.WS_IP


def test_known_tor_relays_are_recognised_on_any_port():
    config = NetworkConfig.from_section(NetworkSection(), tor_relays=["203.0.113.99"])
    [finding] = run([f.tcp_syn("203.0.113.99", 443)], config)
    assert finding.data["kind"] == "tor"


def test_dns_checks_are_off_without_a_resolver_list():
    assert run([f.dns_query(f.FOREIGN_DNS)], NetworkConfig.from_section(NetworkSection())) == []


def test_a_bad_address_in_the_policy_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="'10.0.0.300' is not an IP address.*network section"):
        NetworkConfig.from_section(NetworkSection(dns_resolvers=["10.0.0.300"]))
