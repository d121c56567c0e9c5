"""Crafted frames for the network tests: the attacks and the normal traffic of a lab.

Addresses: the lab is 10.77.0.0/24, the gateway (also DHCP server and resolver)
10.77.0.1 at 02:00:00:00:00:01, the workstation 10.77.0.2 at 02:00:00:00:00:02.
"Foreign" hosts are documentation addresses (RFC 5737), never reachable.
IPv6: the school's router advertises from fe80::1; a rogue one from fe80::66 at
02:66:66:66:66:03, announcing documentation prefixes (RFC 3849, 2001:db8::/32).
"""

from __future__ import annotations

import os

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

GW_IP, GW_MAC = "10.77.0.1", "02:00:00:00:00:01"
WS_IP, WS_MAC = "10.77.0.2", "02:00:00:00:00:02"
ROGUE_MAC = "02:66:66:66:66:01"
ROGUE_DHCP_IP, ROGUE_DHCP_MAC = "10.77.0.66", "02:66:66:66:66:02"
FOREIGN_DNS = "198.51.100.53"
BROADCAST = "ff:ff:ff:ff:ff:ff"
GW_LL = "fe80::1"
WS_LL = "fe80::ff:fe00:2"
ROGUE_RA_IP, ROGUE_RA_MAC = "fe80::66", "02:66:66:66:66:03"
ALL_NODES, ALL_NODES_MAC = "ff02::1", "33:33:00:00:00:01"


def policy_network() -> dict:
    return {"gateway_ip": GW_IP, "gateway_macs": [GW_MAC], "dhcp_servers": [GW_IP], "dns_resolvers": [GW_IP],
            "ipv6_routers": [GW_LL, GW_MAC]}


def arp_reply(ip: str, mac: str, *, to_ip: str = WS_IP, to_mac: str = WS_MAC):
    return Ether(src=mac, dst=to_mac) / ARP(op=2, psrc=ip, hwsrc=mac, pdst=to_ip, hwdst=to_mac)


def arp_request(ip: str, mac: str, *, who_has: str = WS_IP):
    return Ether(src=mac, dst=BROADCAST) / ARP(op=1, psrc=ip, hwsrc=mac, pdst=who_has)


def dhcp_offer(server_ip: str, server_mac: str, *, offered: str = "10.77.0.50", ack: bool = False):
    return (
        Ether(src=server_mac, dst=BROADCAST)
        / IP(src=server_ip, dst="255.255.255.255")
        / UDP(sport=67, dport=68)
        / BOOTP(
            op=2,
            yiaddr=offered,
            siaddr=server_ip,
            chaddr=bytes.fromhex("020000000002") + b"\0" * 10,
            xid=0x1234,
        )
        / DHCP(
            options=[("message-type", 5 if ack else 2), ("server_id", server_ip), ("router", GW_IP), "end"]
        )
    )


def router_advertisement(src_ip: str = ROGUE_RA_IP, src_mac: str = ROGUE_RA_MAC, *, lifetime: int = 1800,
                         prefixes: tuple[str, ...] = ("2001:db8:66::",), hop_limit: int = 255,
                         hop_by_hop: bool = False):
    """An ICMPv6 Router Advertisement to all nodes, as radvd (or an attacker's tool) sends it."""
    ip = IPv6(src=src_ip, dst=ALL_NODES, hlim=hop_limit)
    if hop_by_hop:  # how RA-guard evasion tools hide it from switches
        ip = ip / IPv6ExtHdrHopByHop()
    ra = ICMPv6ND_RA(routerlifetime=lifetime) / ICMPv6NDOptSrcLLAddr(lladdr=src_mac)
    for prefix in prefixes:
        ra = ra / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64)
    return Ether(src=src_mac, dst=ALL_NODES_MAC) / ip / ra


def ipv6_neighbour_traffic() -> list:
    """The workstation's own IPv6 chatter: solicitations, advertisements, MLD, a ping."""
    ws = Ether(src=WS_MAC, dst="33:33:00:00:00:02") / IPv6(src=WS_LL, dst="ff02::2", hlim=255)
    return [
        ws / ICMPv6ND_RS(),
        Ether(src=WS_MAC, dst="33:33:ff:00:00:01") / IPv6(src=WS_LL, dst="ff02::1:ff00:1", hlim=255)
        / ICMPv6ND_NS(tgt=GW_LL),
        Ether(src=GW_MAC, dst=WS_MAC) / IPv6(src=GW_LL, dst=WS_LL, hlim=255) / ICMPv6ND_NA(tgt=GW_LL),
        Ether(src=WS_MAC, dst="33:33:00:00:00:16") / IPv6(src=WS_LL, dst="ff02::16", hlim=1)
        / ICMPv6MLReport2(),
        Ether(src=WS_MAC, dst=GW_MAC) / IPv6(src=WS_LL, dst=GW_LL) / ICMPv6EchoRequest(),
    ]


def dhcp_discover():
    return (
        Ether(src=WS_MAC, dst=BROADCAST)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=bytes.fromhex("020000000002"))
        / DHCP(options=[("message-type", 1), "end"])
    )


def _out(dst: str):
    return Ether(src=WS_MAC, dst=GW_MAC) / IP(src=WS_IP, dst=dst)


def dns_query(resolver: str, name: str = "example.org", *, sport: int = 40000):
    return _out(resolver) / UDP(sport=sport, dport=53) / DNS(rd=1, qd=DNSQR(qname=name))


def dns_answer_from(resolver: str):
    return (
        Ether(src=GW_MAC, dst=WS_MAC)
        / IP(src=resolver, dst=WS_IP)
        / UDP(sport=53, dport=40000)
        / DNS(qr=1, qd=DNSQR(qname="example.org"))
    )


def tcp_syn(dst: str, dport: int, *, sport: int = 41000):
    return _out(dst) / TCP(sport=sport, dport=dport, flags="S")


def tcp_data(dst: str, dport: int):
    return _out(dst) / TCP(sport=41001, dport=dport, flags="PA") / Raw(b"\x16\x03\x01hello")


def wireguard_initiation_payload() -> bytes:
    # type 1, 3 reserved bytes, sender index, ephemeral(32), static(48), timestamp(28), mac1(16), mac2(16)
    return b"\x01\x00\x00\x00" + os.urandom(4) + os.urandom(140)


def wireguard_initiation(dst: str = "203.0.113.5", dport: int = 51820):
    return _out(dst) / UDP(sport=45000, dport=dport) / Raw(wireguard_initiation_payload())


def openvpn_reset_payload() -> bytes:
    # P_CONTROL_HARD_RESET_CLIENT_V2, key 0; session id; ack array length 0; packet id 0 (no tls-auth)
    return bytes([0x38]) + os.urandom(8) + b"\x00" + b"\x00\x00\x00\x00"


def openvpn_reset(dst: str = "203.0.113.6", dport: int = 1194):
    return _out(dst) / UDP(sport=45001, dport=dport) / Raw(openvpn_reset_payload())


def normal_traffic() -> list:
    """A lab's ordinary minute: the gateway's ARP, DHCP from the school's server, DNS to the
    school's resolver, web, NTP, ping, QUIC-ish UDP 443 with random bytes, the school router's
    IPv6 advertisement and neighbour discovery."""
    return [
        arp_request(GW_IP, GW_MAC),
        arp_reply(GW_IP, GW_MAC),
        arp_request(WS_IP, WS_MAC, who_has=GW_IP),
        dhcp_discover(),
        dhcp_offer(GW_IP, GW_MAC),
        dhcp_offer(GW_IP, GW_MAC, ack=True),
        dns_query(GW_IP),
        dns_answer_from(GW_IP),
        tcp_syn("203.0.113.10", 443),
        tcp_syn("203.0.113.11", 80),
        tcp_data("203.0.113.10", 443),
        _out("203.0.113.12") / UDP(sport=123, dport=123) / Raw(b"\x23" + b"\0" * 47),
        _out(GW_IP) / ICMP(),
        _out("203.0.113.13") / UDP(sport=50000, dport=443) / Raw(b"\xc3" + os.urandom(1199)),
        _out("203.0.113.14") / UDP(sport=50001, dport=443) / Raw(b"\x01\x00\x00\x00" + os.urandom(60)),
        router_advertisement(GW_LL, GW_MAC, prefixes=("2001:db8:1::",)),  # the school's own router
        *ipv6_neighbour_traffic(),
    ]
