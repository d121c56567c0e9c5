"""The capture filter: compiled by libpcap, checked frame by frame in a BPF interpreter,
and live in a network namespace, where bulk traffic must never reach Python."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import ICMP, TCP, UDP
from scapy.packet import Raw

from agent.network.bpf import attach_filter, compile_filter
from agent.network.detectors import NetworkConfig
from agent.network.packets import Outbound, parse
from agent.network.sniffer import LiveSniffer, build_bpf
from policy_server.protocol import NetworkSection
from tests.network import frames as f
from tests.network.bpf_vm import run_filter

CONFIG = NetworkConfig.from_section(NetworkSection(**f.policy_network()), local_ips=[f.WS_IP])
PROGRAM = compile_filter(build_bpf(CONFIG))


def passes(packet) -> bool:
    return run_filter(PROGRAM, bytes(packet))


def test_the_filter_lets_through_what_the_checks_need():
    for packet in [
        f.arp_reply(f.GW_IP, f.ROGUE_MAC),
        f.arp_request(f.GW_IP, f.GW_MAC),
        f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC),
        f.dns_query(f.FOREIGN_DNS),
        f.tcp_syn("198.51.100.1", 853),
        f.tcp_syn("203.0.113.7", 9001),
        f.wireguard_initiation(),
        f.wireguard_initiation(dport=443),  # WireGuard hidden on the QUIC port: caught by its first bytes
        f.openvpn_reset(),
        f.router_advertisement(),
    ]:
        assert passes(packet), packet.summary()


def test_the_filter_drops_bulk_traffic_in_the_kernel():
    web = f._out("203.0.113.10")
    for packet in [
        f.tcp_data("203.0.113.10", 443),  # page contents
        web / TCP(sport=41001, dport=443, flags="A") / Raw(b"\0" * 1400),
        web / TCP(sport=443, dport=41001, flags="SA"),
        f._out(f.GW_IP) / ICMP(),
        f._out("203.0.113.13") / UDP(sport=50000, dport=443) / Raw(b"\xc3" + b"\x11" * 1199),  # QUIC
        f._out("203.0.113.12") / UDP(sport=123, dport=123) / Raw(b"\x23" + b"\0" * 47),  # NTP
        *f.ipv6_neighbour_traffic(),  # IPv6 neighbour discovery, MLD, ping: not router advertisements
    ]:
        assert not passes(packet), packet.summary()


def test_a_bad_filter_expression_is_refused_with_libpcap_s_reason():
    with pytest.raises(ValueError, match="does not compile: .*"):
        compile_filter("udp and port banana")


@pytest.mark.root
def test_attach_refuses_an_empty_program():
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        with pytest.raises(ValueError, match="empty"):
            attach_filter(sock, [])


# runs inside the workstation namespace: capture on kws0 until a line arrives on stdin
CAPTURE = """
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from agent.network.detectors import NetworkConfig
from agent.network.packets import Outbound, parse
from agent.network.sniffer import LiveSniffer, build_bpf
from policy_server.protocol import NetworkSection
from tests.network import frames as f
config = NetworkConfig.from_section(NetworkSection(**f.policy_network()), local_ips=[f.WS_IP])
got, ready = [], threading.Event()
sniffer = LiveSniffer(iface="kws0", bpf=build_bpf(config), on_packet=got.append, on_ready=ready.set)
sniffer.start()
ready.wait(5)
print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.5)
sniffer.stop()
print(json.dumps({"frames": [frame.hex() for frame in got]}), flush=True)
"""

# runs inside the LAN namespace: 400 bulk TCP segments and 20 pings, then one DNS query
SEND = """
import sys
sys.path.insert(0, sys.argv[1])
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.sendrecv import sendp
from tests.network import frames as f
to_ws = Ether(src=f.GW_MAC, dst=f.WS_MAC)
web = to_ws / IP(src="203.0.113.10", dst=f.WS_IP)
sendp([web / TCP(sport=443, dport=41001, flags="A") / Raw(b"x" * 1200)] * 400 + [web / ICMP()] * 20,
      iface="klan0", verbose=False)
sendp(to_ws / IP(src=f.FOREIGN_DNS, dst=f.WS_IP) / UDP(sport=40000, dport=53) / Raw(b"q" * 20),
      iface="klan0", verbose=False)
"""


@pytest.mark.root
def test_live_capture_sees_only_the_frames_the_filter_keeps(lab, repo_root):
    """420 bulk frames cross the veth (and are answered); Python gets only the DNS query (and ARP)."""
    argv = ["ip", "netns", "exec", lab["ws"], sys.executable, "-c", CAPTURE, str(repo_root)]
    capture = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert capture.stdout.readline().strip() == "ready", capture.stderr.read()
        subprocess.run(["ip", "netns", "exec", lab["lan"], sys.executable, "-c", SEND, str(repo_root)],
                       check=True, timeout=60, capture_output=True)
        out, err = capture.communicate("stop\n", timeout=30)
    finally:
        if capture.poll() is None:
            capture.kill()
    frames = [bytes.fromhex(frame) for frame in json.loads(out.strip().splitlines()[-1])["frames"]]
    # the workstation's kernel answers the pings, so it ARPs for the gateway: ARP is wanted
    not_arp = [frame for frame in frames if frame[12:14] != b"\x08\x06"]
    assert len(not_arp) == 1, f"the kernel should pass only the DNS query, not {len(not_arp)} frames {err}"
    assert parse(not_arp[0]) == Outbound("udp", f.FOREIGN_DNS, f.WS_IP, 40000, 53, 20, b"q" * 16)
    assert len(frames) <= 5, "a handful of ARP frames at most"


def test_the_sniffer_refuses_a_bad_filter_before_opening_a_socket():
    with pytest.raises(ValueError, match="does not compile"):
        LiveSniffer(iface="lo", bpf="tcp port nope", on_packet=lambda frame: None)


# runs in a namespace with only `lo`: capture on every interface (no default route to pick one)
ALL_INTERFACES = """
import json, socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
from agent.network.sniffer import LiveSniffer
got, ready = [], threading.Event()
sniffer = LiveSniffer(iface=None, bpf="udp and dst port 53", on_packet=got.append, on_ready=ready.set)
sniffer.start()
ready.wait(5)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    for port in (54, 53, 123):
        udp.sendto(b"query", ("127.0.0.1", port))
time.sleep(0.3)
sniffer.stop()
print(json.dumps({"ports": [int.from_bytes(f[36:38], "big") for f in got], "running": sniffer.running}))
"""


@pytest.mark.root
def test_without_an_interface_the_capture_listens_on_all_of_them(repo_root):
    from tests.support import netns_sweep

    ns = f"kall{time.monotonic_ns() % 100000}"
    netns_sweep.sweep("kall")  # a killed run's (owner dead), never another live run's
    netns_sweep.claim(ns)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", ALL_INTERFACES, str(repo_root)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        netns_sweep.release(ns)
    result = json.loads(out.strip().splitlines()[-1])
    # loopback shows each datagram twice (leaving and arriving); only port 53 passes the filter
    assert result["ports"] and set(result["ports"]) == {53} and result["running"] is False
