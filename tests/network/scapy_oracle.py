"""The scapy decoder the agent used before it decoded frames itself (kept as a test
oracle: `agent.network.packets.parse` must say the same about every frame).

One fix over the original: Ethernet padding after a short datagram is not part of the
UDP payload (the old decoder counted it, so a padded 0-byte datagram had 1+ bytes).
And an all-zero source MAC is no address: a DHCP reply's server_mac is then None (the
pcap reader gives frames of non-Ethernet captures such a header).  Router advertisements
were added with the IPv6 check: only those a host accepts (hop limit 255, link-local source)."""

from __future__ import annotations

import ipaddress

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Padding

from agent.network.packets import (
    SIGNATURE_BYTES,
    ArpClaim,
    DhcpServerReply,
    Observation,
    Outbound,
    RouterAdvertisement,
)

_DHCP_MESSAGES = {2: "offer", 5: "ack"}


def _dhcp_options(packet: Packet) -> dict:
    options = {}
    for option in packet[DHCP].options:
        if isinstance(option, tuple) and len(option) >= 2:
            options[option[0]] = option[1]
    return options


def scapy_parse(packet: Packet) -> Observation | None:
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
    if ICMPv6ND_RA in packet:
        ra = packet[ICMPv6ND_RA]
        if ra.code != 0 or packet[IPv6].hlim != 255 or not ipaddress.IPv6Address(src).is_link_local:
            return None
        prefixes, option = [], ra.payload
        while isinstance(option, Packet) and option:
            if isinstance(option, ICMPv6NDOptPrefixInfo):
                prefixes.append(f"{option.prefix}/{option.prefixlen}")
            option = option.payload
        return RouterAdvertisement(str(packet[Ether].src).lower(), src, int(ra.routerlifetime),
                                   tuple(prefixes))
    if UDP in packet:
        udp = packet[UDP]
        if udp.sport == 67 and BOOTP in packet and DHCP in packet and packet[BOOTP].op == 2:
            options = _dhcp_options(packet)
            message = _DHCP_MESSAGES.get(options.get("message-type"))
            if message is None:
                return None
            server = options.get("server_id") or src
            mac = str(packet[Ether].src).lower() if Ether in packet else None
            mac = None if mac == "00:00:00:00:00:00" else mac
            offered = packet[BOOTP].yiaddr
            return DhcpServerReply(server_ip=str(server), server_mac=mac,
                                   offered_ip=None if offered in (None, "0.0.0.0") else offered,
                                   message=message)
        payload = bytes(udp.payload) if udp.payload else b""
        if Padding in udp:
            payload = payload[:len(payload) - len(udp[Padding].load)]
        return Outbound("udp", src, dst, int(udp.sport), int(udp.dport), len(payload),
                        payload[:SIGNATURE_BYTES])
    if TCP in packet:
        tcp = packet[TCP]
        flags = int(tcp.flags)
        if flags & 0x02 and not flags & 0x10:  # SYN without ACK: a connection being opened
            return Outbound("tcp", src, dst, int(tcp.sport), int(tcp.dport))
        return None
    return None
