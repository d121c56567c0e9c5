"""Turn scapy packets into the few plain facts the detectors need.

Everything else about a packet is thrown away here: no payloads are kept beyond
the first bytes a VPN signature needs, and nothing of the traffic's content (001 §2.15).
"""

from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

SIGNATURE_BYTES = 16  # how much of a UDP payload the VPN signatures look at


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


Observation = ArpClaim | DhcpServerReply | Outbound

_DHCP_MESSAGES = {2: "offer", 5: "ack"}


def _dhcp_options(packet: Packet) -> dict:
    options = {}
    for option in packet[DHCP].options:
        if isinstance(option, tuple) and len(option) >= 2:
            options[option[0]] = option[1]
    return options


def parse(packet: Packet) -> Observation | None:
    """The one fact in `packet` the checks care about, or None."""
    if ARP in packet:
        arp = packet[ARP]
        if arp.op not in (1, 2) or not arp.psrc or arp.psrc == "0.0.0.0":
            return None
        return ArpClaim(ip=arp.psrc, mac=str(arp.hwsrc).lower(), reply=arp.op == 2)
    if IP in packet:
        src, dst = packet[IP].src, packet[IP].dst
    elif IPv6 in packet:
        src, dst = packet[IPv6].src, packet[IPv6].dst
    else:
        return None
    if UDP in packet:
        udp = packet[UDP]
        if udp.sport == 67 and BOOTP in packet and DHCP in packet and packet[BOOTP].op == 2:
            options = _dhcp_options(packet)
            message = _DHCP_MESSAGES.get(options.get("message-type"))
            if message is None:
                return None
            server = options.get("server_id") or src
            mac = str(packet[Ether].src).lower() if Ether in packet else None
            offered = packet[BOOTP].yiaddr
            return DhcpServerReply(server_ip=str(server), server_mac=mac,
                                   offered_ip=None if offered in (None, "0.0.0.0") else offered,
                                   message=message)
        payload = bytes(udp.payload) if udp.payload else b""
        return Outbound("udp", src, dst, int(udp.sport), int(udp.dport), len(payload),
                        payload[:SIGNATURE_BYTES])
    if TCP in packet:
        tcp = packet[TCP]
        flags = int(tcp.flags)
        if flags & 0x02 and not flags & 0x10:  # SYN without ACK: a connection being opened
            return Outbound("tcp", src, dst, int(tcp.sport), int(tcp.dport))
        return None
    return None
