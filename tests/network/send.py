"""Run inside a test network namespace (`ip netns exec NS python send.py ACTION…`):
sends real frames or opens real sockets, as an attacker on the LAN or a student on
the workstation would.  Nothing can leave: the namespaces have no route out."""

from __future__ import annotations

import errno
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scapy.layers.dns import DNS, DNSQR  # noqa: E402
from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.sendrecv import send, sendp  # noqa: E402

from tests.network import frames as f  # noqa: E402

LAN_IFACE, WS_IFACE = "klan0", "kws0"


def _tcp_try(ip: str, port: int) -> None:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        try:
            sock.connect((ip, port))
        except OSError:
            pass  # refused or unanswered: only the SYN matters


def _udp(ip: str, port: int, payload: bytes, hold_s: float = 0.0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, (ip, port))
        time.sleep(hold_s)  # keep the socket open so the agent can find its owner


def _udp6(ip: str, port: int, payload: bytes) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        for _ in range(50):  # a fresh veth's link-local address is usable once DAD is over (~2 s)
            try:
                sock.sendto(payload, (ip, port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                time.sleep(0.1)
        else:
            raise OSError(f"no usable IPv6 link-local address on {WS_IFACE} after 5 s")
        time.sleep(0.2)  # let the kernel resolve the neighbour


# the gateway's kernel-made link-local address (EUI-64 of 02:00:00:00:00:01)
GW_KERNEL_LL = "fe80::ff:fe00:1"

ACTIONS = {
    # from the LAN (gateway namespace)
    "lan-normal": lambda: sendp(
        [
            f.arp_reply(f.GW_IP, f.GW_MAC),
            f.dhcp_offer(f.GW_IP, f.GW_MAC),
            f.dhcp_offer(f.GW_IP, f.GW_MAC, ack=True),
            f.router_advertisement(f.GW_LL, f.GW_MAC, prefixes=("2001:db8:1::",)),  # the school's router
        ],
        iface=LAN_IFACE,
        verbose=False,
    ),
    "arp-spoof": lambda: sendp(
        [f.arp_reply(f.GW_IP, f.ROGUE_MAC)] * 30, iface=LAN_IFACE, verbose=False, inter=0.01
    ),
    # a laptop running radvd (or an attack tool): 20 router advertisements, one every 10 ms
    "rogue-ra": lambda: sendp(
        [f.router_advertisement()] * 20, iface=LAN_IFACE, verbose=False, inter=0.01
    ),
    "rogue-dhcp": lambda: sendp(
        f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC), iface=LAN_IFACE, verbose=False
    ),
    # from the workstation (real sockets through the kernel)
    "ws-normal": lambda: (
        send(IP(dst=f.GW_IP) / ICMP(), verbose=False),  # a ping
        _udp(f.GW_IP, 53, bytes(DNS(rd=1, qd=DNSQR(qname="school.kg")))),
        _tcp_try(f.GW_IP, 443),
        _tcp_try("203.0.113.10", 443),
        _udp("203.0.113.12", 123, b"\x23" + b"\0" * 47),
        _udp6(f"{GW_KERNEL_LL}%{WS_IFACE}", 9, b"x"),  # IPv6 to the gateway: neighbour discovery
    ),
    "dns-foreign": lambda: _udp(
        f.FOREIGN_DNS, 53, bytes(DNS(rd=1, qd=DNSQR(qname="blocked.example"))), hold_s=1.5
    ),
    "dot": lambda: _tcp_try("198.51.100.1", 853),
    "wireguard": lambda: _udp("203.0.113.5", 51820, f.wireguard_initiation_payload()),
    "openvpn": lambda: _udp("203.0.113.6", 1194, f.openvpn_reset_payload()),
    "tor": lambda: _tcp_try("203.0.113.7", 9001),
}

if __name__ == "__main__":
    for action in sys.argv[1:]:
        ACTIONS[action]()
