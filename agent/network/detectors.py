"""Pure detectors: observations in, findings out.  No clock, no sockets; the caller
passes `now` (seconds), so a capture file and the live sniffer behave the same.

A finding is an event waiting to happen: its type, the key a storm of the same
finding shares (for the rate limit), and the event's data.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.network.packets import ArpClaim, DhcpServerReply, Observation, Outbound, RouterAdvertisement

# Bypass signatures.  Ports are the protocols' defaults; WireGuard and OpenVPN are also
# recognised by their first bytes on any port.
DOT_PORT = 853
TOR_PORTS = frozenset({9001, 9030, 9040, 9050, 9051, 9150})  # relay ORPort/DirPort, SOCKS defaults
VPN_TCP_PORTS = {1194: "OpenVPN", 1723: "PPTP"}
VPN_UDP_PORTS = {1194: "OpenVPN", 500: "IKE/IPsec", 4500: "IPsec NAT-T", 1701: "L2TP"}
WIREGUARD_INITIATION = b"\x01\x00\x00\x00"
WIREGUARD_INITIATION_LEN = 148
OPENVPN_CLIENT_RESETS = (0x38, 0x50)  # P_CONTROL_HARD_RESET_CLIENT_V2 / _V3, key id 0


def _norm_mac(mac: str) -> str:
    return mac.strip().lower().replace("-", ":")


@dataclass(frozen=True)
class NetworkConfig:
    """What is normal on this segment: the policy's network section plus this host's addresses."""

    gateway_ip: str | None = None
    gateway_macs: frozenset[str] = frozenset()
    dhcp_servers: frozenset[str] = frozenset()
    dns_resolvers: frozenset[str] = frozenset()
    local_ips: frozenset[str] = frozenset()
    tor_relays: frozenset[str] = frozenset()
    ipv6_router_ips: frozenset[str] = frozenset()  # link-local, in compressed form
    ipv6_router_macs: frozenset[str] = frozenset()
    interface: str = ""  # named in events whose data has an interface (rogue RAs)

    @classmethod
    def from_section(cls, section: Any, *, gateway_ip: str | None = None, local_ips: Iterable[str] = (),
                     tor_relays: Iterable[str] = (), interface: str | None = None) -> NetworkConfig:
        """From `PolicyBundle.network`; `gateway_ip` fills in when the policy names none."""
        for value in [*section.dhcp_servers, *section.dns_resolvers,
                      *([section.gateway_ip] if section.gateway_ip else [])]:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"network policy: {value!r} is not an IP address; "
                                 "fix it in the policy's network section") from None
        router_ips, router_macs = _split_routers(getattr(section, "ipv6_routers", []))
        return cls(
            gateway_ip=section.gateway_ip or gateway_ip,
            gateway_macs=frozenset(_norm_mac(m) for m in section.gateway_macs),
            dhcp_servers=frozenset(section.dhcp_servers),
            dns_resolvers=frozenset(section.dns_resolvers),
            local_ips=frozenset(local_ips),
            tor_relays=frozenset(tor_relays),
            ipv6_router_ips=router_ips,
            ipv6_router_macs=router_macs,
            interface=interface or "",
        )


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _split_routers(entries: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The policy's `ipv6_routers` as (link-local addresses, MACs); anything else is refused."""
    ips, macs = set(), set()
    for entry in entries:
        if _MAC.match(_norm_mac(entry)):
            macs.add(_norm_mac(entry))
            continue
        try:
            address = ipaddress.IPv6Address(entry.strip().split("%", 1)[0])
        except ValueError:
            address = None
        if address is None or not address.is_link_local:
            raise ValueError(f"network policy: ipv6_routers entry {entry!r} is neither a MAC "
                             "(02:00:5e:00:00:01) nor a link-local IPv6 address (fe80::1); routers "
                             "advertise from their link-local address: `ip -6 route show default` "
                             "on a workstation shows it")
        ips.add(address.compressed)
    return frozenset(ips), frozenset(macs)


@dataclass(frozen=True)
class Finding:
    event_type: str  # "net.arp_spoof" | "net.rogue_dhcp" | "net.rogue_ra" | "net.bypass"
    key: tuple
    data: dict[str, Any]
    # the local end of a bypass connection, to find the OS user who opened it
    local: tuple[str, str, int] | None = None


@dataclass
class ArpSpoofDetector:
    """The gateway's IP claimed by a MAC that is not the gateway's.

    With `gateway_macs` in the policy, any other MAC is a spoof.  Without, the first
    MAC seen is taken as the gateway's and any *other* MAC claiming its IP is reported
    (several MACs for one IP).  Configure `gateway_macs`: learning trusts whoever
    answers first.
    """

    config: NetworkConfig
    learned: str | None = None
    recent: dict[str, float] = field(default_factory=dict)  # MAC → last time it claimed the gateway
    memory_s: float = 600.0

    def observe(self, claim: ArpClaim, now: float) -> Finding | None:
        gateway = self.config.gateway_ip
        if gateway is None or claim.ip != gateway or claim.mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
            return None
        self.recent[claim.mac] = now
        for mac, seen in list(self.recent.items()):
            if now - seen > self.memory_s:
                del self.recent[mac]
        expected = self.config.gateway_macs
        if expected:
            if claim.mac in expected:
                return None
            expected_mac = sorted(expected)[0]
        else:
            if self.learned is None:
                self.learned = claim.mac
            if claim.mac == self.learned:
                return None
            expected_mac = self.learned
        return Finding("net.arp_spoof", ("net.arp_spoof", gateway, claim.mac),
                       {"gateway_ip": gateway, "expected_mac": expected_mac,
                        "seen_macs": sorted(self.recent)})


@dataclass
class RogueDhcpDetector:
    """DHCP offers or acks from a server the policy does not list (or, with no list,
    from a second server besides the first one seen)."""

    config: NetworkConfig
    learned: str | None = None

    def observe(self, reply: DhcpServerReply, now: float) -> Finding | None:
        allowed = self.config.dhcp_servers
        if allowed:
            if reply.server_ip in allowed:
                return None
        else:
            if self.learned is None:
                self.learned = reply.server_ip
            if reply.server_ip == self.learned:
                return None
        return Finding("net.rogue_dhcp", ("net.rogue_dhcp", reply.server_ip, reply.server_mac),
                       {"server_ip": reply.server_ip, "server_mac": reply.server_mac,
                        "offered_ip": reply.offered_ip})


@dataclass
class RogueRaDetector:
    """IPv6 Router Advertisements offering a default route (lifetime > 0) from a router the
    policy does not list.  A router is the school's when its MAC is listed (if the policy lists
    MACs) and its link-local address is listed (if the policy lists addresses).  With an empty
    list every such RA is reported: most labs here run IPv4 only, so any IPv6 router is foreign,
    and learning the first one would trust whichever laptop spoke first.  Lifetime 0 ("I am not
    a default router", also sent by routers shutting down) is never reported."""

    config: NetworkConfig

    def is_school_router(self, ra: RouterAdvertisement) -> bool:
        ips, macs = self.config.ipv6_router_ips, self.config.ipv6_router_macs
        if not ips and not macs:
            return False
        return (not macs or ra.src_mac in macs) and (not ips or ra.src_ip in ips)

    def observe(self, ra: RouterAdvertisement, now: float) -> Finding | None:
        if ra.router_lifetime == 0 or self.is_school_router(ra):
            return None
        return Finding("net.rogue_ra", ("net.rogue_ra", ra.src_mac, ra.src_ip),
                       {"src_mac": ra.src_mac, "src_ip": ra.src_ip, "router_lifetime": ra.router_lifetime,
                        "prefixes": list(ra.prefixes), "interface": self.config.interface})


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def classify_outbound(flow: Outbound, config: NetworkConfig) -> tuple[str, str] | None:
    """(kind, detail) when `flow` looks like a way round the filter, else None."""
    if flow.dst_ip in config.local_ips or _is_loopback(flow.dst_ip):
        return None  # traffic *to* this machine, or to its own stub resolver
    port = flow.dst_port
    if port == 53 and config.dns_resolvers and flow.dst_ip not in config.dns_resolvers:
        return "dns", f"DNS over {flow.proto.upper()} to a resolver not in the policy"
    if port == DOT_PORT and flow.dst_ip not in config.dns_resolvers:
        return "dot", "DNS over TLS (port 853)" if flow.proto == "tcp" else "DNS over QUIC (UDP 853)"
    if flow.proto == "udp":
        if flow.head.startswith(WIREGUARD_INITIATION) and flow.payload_len == WIREGUARD_INITIATION_LEN:
            return "vpn", "WireGuard handshake initiation"
        if flow.head[:1] and flow.head[0] in OPENVPN_CLIENT_RESETS and (
                port == 1194 or (flow.payload_len == 14 and flow.head[9:14] == b"\x00" * 5)):
            return "vpn", "OpenVPN client hard reset"
        if port in VPN_UDP_PORTS:
            return "vpn", f"{VPN_UDP_PORTS[port]} (UDP {port})"
        return None
    if port in VPN_TCP_PORTS:
        return "vpn", f"{VPN_TCP_PORTS[port]} (TCP {port})"
    if port in TOR_PORTS:
        return "tor", f"connection to a Tor port (TCP {port})"
    if flow.dst_ip in config.tor_relays:
        return "tor", "connection to a known Tor relay"
    return None


@dataclass
class BypassDetector:
    config: NetworkConfig

    def observe(self, flow: Outbound, now: float) -> Finding | None:
        verdict = classify_outbound(flow, self.config)
        if verdict is None:
            return None
        kind, detail = verdict
        return Finding("net.bypass", ("net.bypass", kind, flow.dst_ip, flow.dst_port),
                       {"kind": kind, "dst_ip": flow.dst_ip, "dst_port": flow.dst_port, "detail": detail},
                       local=(flow.proto, flow.src_ip, flow.src_port))


@dataclass
class Detectors:
    """All four, fed one observation at a time."""

    config: NetworkConfig
    arp: ArpSpoofDetector = field(init=False)
    dhcp: RogueDhcpDetector = field(init=False)
    ra: RogueRaDetector = field(init=False)
    bypass: BypassDetector = field(init=False)

    def __post_init__(self) -> None:
        self.arp = ArpSpoofDetector(self.config)
        self.dhcp = RogueDhcpDetector(self.config)
        self.ra = RogueRaDetector(self.config)
        self.bypass = BypassDetector(self.config)

    def observe(self, observation: Observation, now: float) -> Finding | None:
        if isinstance(observation, ArpClaim):
            return self.arp.observe(observation, now)
        if isinstance(observation, DhcpServerReply):
            return self.dhcp.observe(observation, now)
        if isinstance(observation, RouterAdvertisement):
            return self.ra.observe(observation, now)
        if isinstance(observation, Outbound):
            return self.bypass.observe(observation, now)
        return None
