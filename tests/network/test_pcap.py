"""Crafted captures written with scapy, read back by the same path the CLI uses."""

from __future__ import annotations

import subprocess
import sys

import pytest
from scapy.utils import wrpcap

from agent.network.detectors import NetworkConfig
from agent.network.pcap import analyze_pcap
from policy_server.protocol import NetworkSection, make_event
from tests.network import frames as f

CONFIG = NetworkConfig.from_section(NetworkSection(**f.policy_network()), local_ips=[f.WS_IP])


def write(path, packets, *, start: float = 1_700_000_000.0, step: float = 0.05):
    for i, packet in enumerate(packets):
        packet.time = start + i * step
    wrpcap(str(path), packets)
    return path


def test_a_normal_capture_raises_nothing(tmp_path):
    assert analyze_pcap(write(tmp_path / "normal.pcap", f.normal_traffic() * 20), CONFIG) == []


def test_a_mixed_capture_reports_each_attack_once_and_events_are_valid(tmp_path):
    attacks = [
        f.arp_reply(f.GW_IP, f.ROGUE_MAC),
        f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC),
        f.dns_query(f.FOREIGN_DNS),
        f.tcp_syn("198.51.100.1", 853),
        f.wireguard_initiation(),
        f.openvpn_reset(),
        f.tcp_syn("203.0.113.7", 9001),
        f.router_advertisement(),
    ]
    packets = []
    for attack in attacks:
        packets += f.normal_traffic()[:5] + [attack]
    emissions = analyze_pcap(write(tmp_path / "mixed.pcap", packets), CONFIG)
    seen = sorted((e.event_type, e.data.get("kind", "")) for e in emissions)
    assert seen == sorted(
        [
            ("net.arp_spoof", ""),
            ("net.rogue_dhcp", ""),
            ("net.bypass", "dns"),
            ("net.bypass", "dot"),
            ("net.bypass", "vpn"),
            ("net.bypass", "vpn"),
            ("net.bypass", "tor"),
            ("net.rogue_ra", ""),
        ]
    )
    for emission in emissions:  # what the collector would store passes the wire protocol
        make_event(emission.event_type, emission.data)


def test_an_arp_storm_is_folded(tmp_path):
    storm = [f.arp_reply(f.GW_IP, f.ROGUE_MAC)] * 300
    emissions = analyze_pcap(write(tmp_path / "storm.pcap", storm, step=0.01), CONFIG, interval_s=60)
    assert [e.data["occurrences"] for e in emissions] == [1, 299]


def test_the_cli_reads_a_capture_and_prints_events(tmp_path, repo_root):
    path = write(tmp_path / "c.pcap", f.normal_traffic() + [f.wireguard_initiation()])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.network.cli",
            "network",
            "scan-pcap",
            str(path),
            "--gateway-ip",
            f.GW_IP,
            "--gateway-mac",
            f.GW_MAC,
            "--dhcp-server",
            f.GW_IP,
            "--dns-resolver",
            f.GW_IP,
            "--ipv6-router",  # the school router's RA in the normal traffic is then quiet
            f.GW_LL,
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and '"net.bypass"' in lines[0] and "WireGuard" in lines[0]


def test_a_file_that_is_not_a_capture_is_refused(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a readable pcap"):
        analyze_pcap(bad, CONFIG)
    with pytest.raises(FileNotFoundError, match="not found"):
        analyze_pcap(tmp_path / "missing.pcap", CONFIG)
