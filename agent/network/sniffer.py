"""The live edge: capture with scapy on one interface, through a kernel BPF filter
so that only the few packets the checks need ever reach Python."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import psutil
from scapy.sendrecv import AsyncSniffer

from agent.network.detectors import DOT_PORT, TOR_PORTS, VPN_TCP_PORTS, VPN_UDP_PORTS, NetworkConfig

log = logging.getLogger("kalkan.network")


def build_bpf(config: NetworkConfig) -> str:
    """ARP, DHCP server replies, DNS/DoT/VPN/Tor ports, and WireGuard/OpenVPN first bytes on any UDP port."""
    udp_ports = sorted({53, DOT_PORT, *VPN_UDP_PORTS})
    tcp_ports = sorted({53, DOT_PORT, *VPN_TCP_PORTS, *TOR_PORTS})
    parts = [
        "arp",
        "(udp and src port 67)",
        "(udp and (" + " or ".join(f"dst port {p}" for p in udp_ports) + "))",
        # IPv4 payload signatures: WireGuard initiation (type 1), OpenVPN client resets
        "(ip and udp and (udp[8:4] = 0x01000000 or udp[8] = 0x38 or udp[8] = 0x50))",
        "(tcp and (" + " or ".join(f"dst port {p}" for p in tcp_ports) + "))",
    ]
    if config.tor_relays:
        parts.append("(ip and tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn)")
    return " or ".join(parts)


def default_route(proc_route: Path = Path("/proc/net/route")) -> tuple[str | None, str | None]:
    """(interface, gateway IP) of the IPv4 default route, from the kernel's table."""
    try:
        lines = proc_route.read_text().splitlines()[1:]
    except OSError:
        return None, None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000":
            gateway = socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
            return fields[0], gateway
    return None, None


def local_addresses() -> set[str]:
    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.add(entry.address.split("%", 1)[0])
    return addresses


def socket_owner(proto: str, local_ip: str, local_port: int) -> str | None:
    """The OS user owning the local socket of a connection, if it still exists."""
    try:
        for conn in psutil.net_connections(kind=proto):
            if conn.laddr and conn.laddr.port == local_port and conn.pid and (
                    conn.laddr.ip in (local_ip, "0.0.0.0", "::")):
                return psutil.Process(conn.pid).username()
    except (psutil.Error, OSError):
        return None
    return None


class LiveSniffer:
    def __init__(self, *, iface: str | None, bpf: str, on_packet: Callable,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.iface = iface
        self._sniffer = AsyncSniffer(iface=iface, filter=bpf, prn=on_packet, store=False,
                                     started_callback=on_ready)

    def start(self) -> None:
        self._sniffer.start()

    @property
    def running(self) -> bool:
        return bool(self._sniffer.running)

    def stop(self) -> None:
        if self._sniffer.running:
            try:
                self._sniffer.stop()
            except Exception as exc:  # scapy raises if the capture thread already died
                log.warning("network: stopping the capture: %s", exc)
