"""The live edge: an AF_PACKET socket on one interface with a kernel BPF filter, so
that only the few frames the checks need ever reach Python, and one thread that
sleeps in poll() (no timeout) until such a frame arrives or the capture is stopped.

No scapy here: it cost ~33 MB of the agent's memory (benchmarks/agent/RESULTS.md).
On one interface the socket is opened listening to no protocol, the filter is
attached, and only then is it bound, so no unfiltered frame is ever queued on it.
Without an interface (no default route) it listens on all of them and throws away
what arrived before the filter was attached.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from agent.network.bpf import attach_filter, compile_filter
from agent.network.detectors import DOT_PORT, TOR_PORTS, VPN_TCP_PORTS, VPN_UDP_PORTS, NetworkConfig

log = logging.getLogger("kalkan.network")


def build_bpf(config: NetworkConfig) -> str:
    """ARP, DHCP server replies, IPv6 router advertisements, DNS/DoT/VPN/Tor ports, and
    WireGuard/OpenVPN first bytes on any UDP port."""
    udp_ports = sorted({53, DOT_PORT, *VPN_UDP_PORTS})
    tcp_ports = sorted({53, DOT_PORT, *VPN_TCP_PORTS, *TOR_PORTS})
    parts = [
        "arp",
        "(udp and src port 67)",
        # ICMPv6 Router Advertisements with hop limit 255 (hosts drop the others), right behind the
        # IPv6 header or behind one 8-byte hop-by-hop / destination-options header (the way RA-guard
        # evasion tools send them).  libpcap's `protochain` would walk every header, but it needs
        # backward jumps the kernel refuses; other ICMPv6 (neighbour discovery, MLD, ping) stays out.
        "(ip6 and ip6[7] = 255 and ((ip6[6] = 58 and ip6[40] = 134) or"
        " ((ip6[6] = 0 or ip6[6] = 60) and ip6[40] = 58 and ip6[41] = 0 and ip6[48] = 134)))",
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


ETH_P_ALL = 0x0003
MAX_FRAME = 65535


def _discard_queued(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(MAX_FRAME)
        except (BlockingIOError, InterruptedError):
            return


class LiveSniffer:
    """Calls `on_packet(frame: bytes)` for each Ethernet frame the filter lets through."""

    def __init__(self, *, iface: str | None, bpf: str, on_packet: Callable[[bytes], object],
                 on_ready: Callable[[], None] | None = None) -> None:
        self.iface = iface
        self.on_packet = on_packet
        self.on_ready = on_ready
        self.program = compile_filter(bpf)  # a bad expression fails here, before any socket
        self.frames = 0
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.iface:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        else:  # every interface: an AF_PACKET socket cannot be bound to "all", so it listens at once
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            attach_filter(sock, self.program)
            if self.iface:
                # Python converts the protocol to network order itself here (unlike in socket())
                sock.bind((self.iface, ETH_P_ALL))
            sock.setblocking(False)
            if not self.iface:
                _discard_queued(sock)  # frames that arrived before the filter was attached
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="network-capture", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        if self.on_ready:
            self.on_ready()
        while True:
            ready = {fd for fd, _ in poller.poll()}  # no timeout: a quiet network wakes no one
            if self._wake_r in ready:
                return
            self._drain()

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                frame = self._sock.recv(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. the interface went away; the collector's health shows it
                log.error("network: capture on %s failed: %s", self.iface or "all interfaces", exc)
                raise
            self.frames += 1
            try:
                self.on_packet(frame)
            except Exception:  # noqa: BLE001 - one bad frame must not end the capture
                log.exception("network: checking a captured frame failed")

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            os.write(self._wake_w, b"x")
            thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None
