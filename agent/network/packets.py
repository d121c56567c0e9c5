"""Turn an Ethernet frame into the few plain facts the detectors need.

A small decoder over the raw bytes (struct), not scapy: the live capture hands us
bytes from an AF_PACKET socket, and importing scapy's layers cost the agent ~33 MB
of memory for the dozen fields read here.  Tests feed it frames crafted with scapy.

Everything else about a frame is thrown away here: no payloads are kept beyond the
first bytes a VPN signature needs, and nothing of the traffic's content (001 §2.15).
A malformed or truncated frame gives None, never an exception.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

SIGNATURE_BYTES = 16  # how much of a UDP payload the VPN signatures look at

ETH_ARP, ETH_IPV4, ETH_IPV6 = 0x0806, 0x0800, 0x86DD
VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 6, 17, 58
ICMPV6_ROUTER_ADVERTISEMENT = 134
ND_HOP_LIMIT = 255  # RFC 4861 §6.1.2: hosts drop neighbour discovery that crossed a router
ND_OPTION_PREFIX = 3
# IPv6 extension headers a UDP/TCP header may hide behind: hop-by-hop, routing, destination options
IPV6_SKIPPABLE = (0, 43, 60)
IPV6_FRAGMENT, IPV6_AUTH = 44, 51
DHCP_MAGIC = b"\x63\x82\x53\x63"
DHCP_OPTIONS_AT = 240  # BOOTP's fixed part (236 bytes) + the magic cookie
TCP_SYN, TCP_ACK = 0x02, 0x10


@dataclass(frozen=True)
class ArpClaim:
    """Someone said "IP `ip` is at MAC `mac`" (an ARP reply, or a request's sender fields)."""

    ip: str
    mac: str
    reply: bool


@dataclass(frozen=True)
class DhcpServerReply:
    """A DHCP OFFER or ACK: a server offering addresses on this segment."""

    server_ip: str
    server_mac: str | None
    offered_ip: str | None
    message: str  # "offer" | "ack"


@dataclass(frozen=True)
class Outbound:
    """The start of a conversation: a UDP datagram or a TCP SYN."""

    proto: str  # "udp" | "tcp"
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    payload_len: int = 0
    head: bytes = b""  # the first SIGNATURE_BYTES of a UDP payload


@dataclass(frozen=True)
class RouterAdvertisement:
    """An ICMPv6 Router Advertisement a host would accept (hop limit 255, link-local source):
    the sender offers itself as the IPv6 default router for `router_lifetime` seconds."""

    src_mac: str
    src_ip: str
    router_lifetime: int
    prefixes: tuple[str, ...] = ()  # the prefix information options, "2001:db8:1::/64"


Observation = ArpClaim | DhcpServerReply | Outbound | RouterAdvertisement

_DHCP_MESSAGES = {2: "offer", 5: "ack"}


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse(frame: bytes | Any) -> Observation | None:
    """The one fact in an Ethernet frame the checks care about, or None.

    `frame` is the raw bytes; anything else with `bytes(frame)` (a scapy packet) works too.
    """
    data = frame if isinstance(frame, (bytes, bytearray, memoryview)) else bytes(frame)
    try:
        return _parse_ethernet(bytes(data))
    except (struct.error, IndexError, ValueError, OSError):
        return None  # truncated or malformed: nothing the checks can use


def _parse_ethernet(frame: bytes) -> Observation | None:
    src_mac = frame[6:12]
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    offset = 14
    while ethertype in VLAN_TAGS:
        (ethertype,) = struct.unpack_from("!H", frame, offset + 2)
        offset += 4
    if ethertype == ETH_ARP:
        return _parse_arp(frame, offset)
    if ethertype == ETH_IPV4:
        found = _ipv4(frame, offset)
    elif ethertype == ETH_IPV6:
        found = _ipv6(frame, offset)
    else:
        return None
    if found is None:
        return None
    src, dst, proto, l4 = found
    if proto == IPPROTO_ICMPV6 and ethertype == ETH_IPV6:
        return _parse_router_advertisement(frame, offset, l4, src, src_mac)
    if proto == IPPROTO_UDP:
        return _parse_udp(l4, src, dst, src_mac)
    if proto == IPPROTO_TCP:
        sport, dport = struct.unpack_from("!HH", l4, 0)
        flags = l4[13]
        if flags & TCP_SYN and not flags & TCP_ACK:  # SYN without ACK: a connection being opened
            return Outbound("tcp", src, dst, sport, dport)
    return None


def _parse_arp(frame: bytes, offset: int) -> ArpClaim | None:
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, offset)
    if (htype, ptype, hlen, plen) != (1, ETH_IPV4, 6, 4) or op not in (1, 2):
        return None
    sender_mac = frame[offset + 8:offset + 14]
    sender_ip = frame[offset + 14:offset + 18]
    if len(sender_ip) != 4 or sender_ip == b"\0\0\0\0":
        return None
    return ArpClaim(ip=socket.inet_ntoa(sender_ip), mac=_mac(sender_mac), reply=op == 2)


def _ipv4(frame: bytes, offset: int) -> tuple[str, str, int, bytes] | None:
    version_ihl, _tos, total_length, _ident, fragment, _ttl, proto = struct.unpack_from(
        "!BBHHHBB", frame, offset)
    header = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header < 20 or fragment & 0x1FFF:
        return None  # not IPv4, or a later fragment (no transport header in it)
    src = socket.inet_ntoa(frame[offset + 12:offset + 16])
    dst = socket.inet_ntoa(frame[offset + 16:offset + 20])
    end = offset + total_length if total_length >= header else len(frame)
    return src, dst, proto, frame[offset + header:end]


def _ipv6(frame: bytes, offset: int) -> tuple[str, str, int, bytes] | None:
    (payload_length,) = struct.unpack_from("!H", frame, offset + 4)
    next_header = frame[offset + 6]
    src = socket.inet_ntop(socket.AF_INET6, frame[offset + 8:offset + 24])
    dst = socket.inet_ntop(socket.AF_INET6, frame[offset + 24:offset + 40])
    payload = frame[offset + 40:offset + 40 + payload_length] if payload_length else frame[offset + 40:]
    at = 0
    for _ in range(8):  # a bounded walk over the extension headers
        if next_header in IPV6_SKIPPABLE:
            next_header, length = payload[at], (payload[at + 1] + 1) * 8
        elif next_header == IPV6_AUTH:
            next_header, length = payload[at], (payload[at + 1] + 2) * 4
        elif next_header == IPV6_FRAGMENT:
            (fragment,) = struct.unpack_from("!H", payload, at + 2)
            if fragment & 0xFFF8:
                return None  # a later fragment
            next_header, length = payload[at], 8
        else:
            return src, dst, next_header, payload[at:]
        at += length
    return None


def _parse_udp(l4: bytes, src: str, dst: str, src_mac: bytes) -> Observation | None:
    sport, dport, length = struct.unpack_from("!HHH", l4, 0)
    payload = l4[8:length] if length >= 8 else l4[8:]
    if sport == 67 and dport == 68:
        reply = _parse_dhcp_server_reply(payload, src, src_mac)
        if reply is not False:
            return reply
    return Outbound("udp", src, dst, sport, dport, len(payload), payload[:SIGNATURE_BYTES])


def _parse_dhcp_server_reply(bootp: bytes, src: str, src_mac: bytes) -> DhcpServerReply | None | bool:
    """A server's OFFER/ACK; None for other DHCP messages; False if this is not a DHCP reply at all."""
    if len(bootp) < DHCP_OPTIONS_AT or bootp[0] != 2 or bootp[236:240] != DHCP_MAGIC:
        return False  # not a BOOTP reply carrying DHCP: treat it as any other datagram
    options: dict[int, bytes] = {}
    at = DHCP_OPTIONS_AT
    while at < len(bootp):
        code = bootp[at]
        if code == 0:  # pad
            at += 1
            continue
        if code == 255 or at + 1 >= len(bootp):  # end
            break
        size = bootp[at + 1]
        options.setdefault(code, bootp[at + 2:at + 2 + size])
        at += 2 + size
    message = _DHCP_MESSAGES.get(options.get(53, b"\0")[0])
    if message is None:
        return None
    server_id = options.get(54, b"")
    server = socket.inet_ntoa(server_id[:4]) if len(server_id) >= 4 else src
    offered = socket.inet_ntoa(bootp[16:20])
    return DhcpServerReply(server_ip=server,
                           server_mac=_mac(src_mac) if src_mac.strip(b"\0") else None,
                           offered_ip=None if offered == "0.0.0.0" else offered,
                           message=message)


def _parse_router_advertisement(frame: bytes, ip_offset: int, icmp: bytes, src: str,
                                src_mac: bytes) -> RouterAdvertisement | None:
    """Only the RAs a host accepts (RFC 4861 §6.1.2); every other ICMPv6 message gives None."""
    icmp_type, code = icmp[0], icmp[1]
    hop_limit = frame[ip_offset + 7]
    if icmp_type != ICMPV6_ROUTER_ADVERTISEMENT or code != 0 or len(icmp) < 16:
        return None
    if hop_limit != ND_HOP_LIMIT or not ipaddress.IPv6Address(src).is_link_local:
        return None  # from beyond this link: every host drops it, so it cannot hurt
    (lifetime,) = struct.unpack_from("!H", icmp, 6)
    prefixes = []
    at = 16  # type, code, checksum, hop limit, flags, lifetime, reachable, retrans timer
    while at + 2 <= len(icmp):
        option, units = icmp[at], icmp[at + 1]
        if units == 0:
            break  # a zero-length option is invalid; stop rather than loop
        if option == ND_OPTION_PREFIX and units == 4 and at + 32 <= len(icmp):
            prefix = socket.inet_ntop(socket.AF_INET6, icmp[at + 16:at + 32])
            prefixes.append(f"{prefix}/{icmp[at + 2]}")
        at += units * 8
    return RouterAdvertisement(src_mac=_mac(src_mac), src_ip=src, router_lifetime=lifetime,
                               prefixes=tuple(prefixes))
