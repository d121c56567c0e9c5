"""Live: the real NetworkCollector (through `kalkan-agent network watch`) captures in
the workstation's namespace while scapy and real sockets send frames on the veth."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policy_server.protocol import EventEnvelope
from tests.network import frames as f

SEND = Path(__file__).with_name("send.py")


class Watcher:
    """`kalkan-agent network watch` in the workstation namespace."""

    def __init__(self, lab, repo: Path) -> None:
        self.lab, self.repo = lab, repo
        argv = [
            "ip",
            "netns",
            "exec",
            lab["ws"],
            sys.executable,
            "-m",
            "agent.network.cli",
            "network",
            "watch",
            "--iface",
            "kws0",
            "--seat",
            "lab1-07",
            "--interval",
            "60",
            *sum(
                (
                    ["--" + k.replace("_", "-").rstrip("s"), v]
                    for k, vs in f.policy_network().items()
                    for v in ([vs] if isinstance(vs, str) else vs)
                ),
                [],
            ),
        ]
        self.proc = subprocess.Popen(
            argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        ready = self.proc.stderr.readline()
        assert '"ready": true' in ready, ready + self.proc.stderr.read()

    def send(self, ns_key: str, *actions: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.lab[ns_key], sys.executable, str(SEND), *actions],
            cwd=self.repo,
            check=True,
            timeout=60,
        )

    def stop(self) -> tuple[list[EventEnvelope], dict]:
        time.sleep(0.5)  # the last frames reach the capture
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        events = [EventEnvelope.model_validate_json(line) for line in out.splitlines() if line.strip()]
        summary = json.loads(err.strip().splitlines()[-1])
        return events, summary


@pytest.mark.root
def test_normal_lab_traffic_raises_nothing(lab, repo_root):
    watcher = Watcher(lab, repo_root)
    watcher.send("lan", "lan-normal")
    watcher.send("ws", "ws-normal")
    events, summary = watcher.stop()
    assert events == []
    assert summary["packets"] >= 5, (
        "the capture must have seen the normal traffic for this test to mean anything"
    )


@pytest.mark.root
def test_each_attack_is_detected_live(lab, repo_root):
    watcher = Watcher(lab, repo_root)
    watcher.send("ws", "dns-foreign", "dot", "wireguard", "openvpn", "tor")
    watcher.send("lan", "rogue-dhcp", "arp-spoof", "rogue-ra")
    events, _ = watcher.stop()
    by_type: dict[str, list[EventEnvelope]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event)

    bypass = {(e.data["kind"], e.data["dst_ip"], e.data["dst_port"]) for e in by_type["net.bypass"]}
    assert bypass == {
        ("dns", f.FOREIGN_DNS, 53),
        ("dot", "198.51.100.1", 853),
        ("vpn", "203.0.113.5", 51820),
        ("vpn", "203.0.113.6", 1194),
        ("tor", "203.0.113.7", 9001),
    }
    [dns] = [e for e in by_type["net.bypass"] if e.data["kind"] == "dns"]
    assert dns.subject is not None and dns.subject.os_user == "root"  # who opened the socket
    assert dns.subject.seat == "lab1-07"

    [dhcp] = by_type["net.rogue_dhcp"]
    assert (dhcp.data["server_ip"], dhcp.data["server_mac"]) == (f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC)

    # 30 spoofed replies: one event at once, one summary when the collector stops
    spoof = by_type["net.arp_spoof"]
    assert len(spoof) <= 2 and sum(e.data["occurrences"] for e in spoof) == 30
    assert all(f.ROGUE_MAC in e.data["seen_macs"] and e.data["expected_mac"] == f.GW_MAC for e in spoof)

    # 20 router advertisements from a laptop: one event at once, one summary when the collector stops
    rogue_ra = by_type["net.rogue_ra"]
    assert len(rogue_ra) <= 2 and sum(e.data["occurrences"] for e in rogue_ra) == 20
    assert all((e.data["src_mac"], e.data["src_ip"], e.data["interface"], e.data["prefixes"])
               == (f.ROGUE_RA_MAC, f.ROGUE_RA_IP, "kws0", ["2001:db8:66::/64"]) for e in rogue_ra)
    assert rogue_ra[0].clauses == ["000 §5.6"]
    assert set(by_type) == {"net.bypass", "net.rogue_dhcp", "net.arp_spoof", "net.rogue_ra"}
