"""The network checks over a capture file (tcpdump/Wireshark pcap), using each
packet's own timestamp as the clock.

scapy reads the file (this runs from the CLI, never inside the agent); each packet
goes to the same decoder as live frames, as Ethernet bytes.  Captures of another
link type (`tcpdump -i any` writes Linux "cooked" frames) get an Ethernet header
without addresses in front of their ARP/IP part."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from scapy.utils import PcapReader

from agent.network.detectors import NetworkConfig
from agent.network.monitor import NetworkMonitor
from agent.network.ratelimit import Emission


def as_ethernet(packet: Packet) -> bytes:
    if isinstance(packet, Ether):
        return bytes(packet)
    for layer, ethertype in ((ARP, 0x0806), (IP, 0x0800), (IPv6, 0x86DD)):
        if layer in packet:
            return bytes(12) + ethertype.to_bytes(2, "big") + bytes(packet[layer])
    return b""


def analyze_pcap(path: Path, config: NetworkConfig, *, interval_s: float = 60.0) -> list[Emission]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"capture file {path} not found")
    monitor = NetworkMonitor(config, interval_s=interval_s)
    out: list[Emission] = []
    last = 0.0
    try:
        with PcapReader(str(path)) as reader:
            for packet in reader:
                last = float(packet.time)
                out.extend(monitor.feed(as_ethernet(packet), last))
    except Exception as exc:  # scapy raises plain Scapy_Exception/EOFError for bad files
        raise ValueError(f"{path} is not a readable pcap capture: {exc}") from None
    out.extend(monitor.flush(last, force=True))
    return out
