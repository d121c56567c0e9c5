"""The agent's own frame decoder against scapy's dissectors (the previous decoder, kept as
an oracle): random ARP, DHCP, UDP and TCP frames over IPv4 and IPv6, IPv6 router
advertisements, VLAN tags, Ethernet padding; and garbage never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_RA,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from agent.network.packets import ArpClaim, DhcpServerReply, Outbound, parse
from tests.network import frames as f
from tests.network.scapy_oracle import scapy_parse

# ports scapy dissects further (and re-serialises on bytes()): random payloads there say
# more about scapy than about the decoder, so random UDP traffic avoids them
_DISSECTED = {v for fields, _cls in UDP.payload_guess for k, v in fields.items() if k in ("sport", "dport")}
ports = st.integers(0, 65535).filter(lambda p: p not in _DISSECTED)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@st.composite
def l3(draw):
    if draw(st.booleans()):
        return IP(src=draw(ipv4), dst=draw(ipv4))
    head = IPv6(src=draw(ipv6), dst=draw(ipv6))
    for ext in draw(st.lists(st.sampled_from([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt]), max_size=2)):
        head = head / ext()
    return head


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(["arp", "udp", "tcp", "dhcp", "ra"]))
    ether = Ether(src=draw(macs), dst=draw(macs))
    if draw(st.booleans()):
        ether = ether / Dot1Q(vlan=draw(st.integers(1, 4094)))
    if kind == "arp":
        body = ARP(op=draw(st.integers(1, 3)), psrc=draw(st.sampled_from(["0.0.0.0", draw(ipv4)])),
                   hwsrc=draw(macs), pdst=draw(ipv4))
        packet = ether / body
    elif kind == "udp":
        payload = Raw(draw(st.binary(max_size=40)))
        packet = ether / draw(l3()) / UDP(sport=draw(ports), dport=draw(ports)) / payload
    elif kind == "tcp":
        flags = draw(st.integers(0, 0x1FF))
        packet = ether / draw(l3()) / TCP(sport=draw(ports), dport=draw(ports), flags=flags)
    elif kind == "ra":
        link_local = st.integers(0, 2**64 - 1).map(lambda i: f"fe80::{i >> 48:x}:{i >> 32 & 0xffff:x}:1")
        head = IPv6(src=draw(st.one_of(link_local, ipv6)), dst="ff02::1",
                    hlim=draw(st.sampled_from([255, 255, 64, 1])))
        for ext in draw(st.lists(st.sampled_from([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt]), max_size=2)):
            head = head / ext()
        ra = ICMPv6ND_RA(code=draw(st.sampled_from([0, 0, 1])), routerlifetime=draw(st.integers(0, 65535)))
        for option in draw(st.lists(st.sampled_from(["prefix", "mac", "mtu"]), max_size=3)):
            if option == "prefix":
                ra = ra / ICMPv6NDOptPrefixInfo(prefix=draw(ipv6), prefixlen=draw(st.integers(0, 128)))
            elif option == "mac":
                ra = ra / ICMPv6NDOptSrcLLAddr(lladdr=draw(macs))
            else:
                ra = ra / ICMPv6NDOptMTU(mtu=1500)
        packet = ether / head / ra
    else:
        options = [("message-type", draw(st.integers(1, 8)))]
        if draw(st.booleans()):
            options.append(("server_id", draw(ipv4)))
        bootp = BOOTP(op=draw(st.sampled_from([1, 2])), yiaddr=draw(ipv4))
        packet = (ether / IP(src=draw(ipv4), dst="255.255.255.255") / UDP(sport=67, dport=68)
                  / bootp / DHCP(options=[*options, "end"]))
    padding = b"\0" * draw(st.integers(0, 30))  # real frames are padded to 60 bytes
    return bytes(packet) + padding


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_the_decoder_agrees_with_scapy(frame):
    assert parse(frame) == scapy_parse(Ether(frame))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_and_truncated_frames_never_raise(noise):
    parse(noise)
    for cut in (0, 13, 20, 34, 41, 60):
        parse(bytes(f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC))[:cut] + noise)


def test_the_facts_of_the_lab_frames():
    assert parse(bytes(f.arp_reply(f.GW_IP, f.ROGUE_MAC))) == ArpClaim(f.GW_IP, f.ROGUE_MAC, reply=True)
    assert parse(bytes(f.dhcp_offer(f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC, ack=True))) == DhcpServerReply(
        f.ROGUE_DHCP_IP, f.ROGUE_DHCP_MAC, "10.77.0.50", "ack")
    wireguard = parse(bytes(f.wireguard_initiation()))
    assert isinstance(wireguard, Outbound) and wireguard.head[:4] == b"\x01\x00\x00\x00"
    assert wireguard.payload_len == 148 and len(wireguard.head) == 16
    # a later IPv4 fragment carries no transport header: nothing to say about it
    fragment = Ether() / IP(src=f.WS_IP, dst=f.FOREIGN_DNS, frag=10, proto=17) / Raw(b"\0" * 16)
    assert parse(bytes(fragment)) is None
