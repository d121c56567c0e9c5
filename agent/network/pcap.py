"""The network checks over a capture file (tcpdump/Wireshark pcap), using each
packet's own timestamp as the clock."""

from __future__ import annotations

from pathlib import Path

from scapy.utils import PcapReader

from agent.network.detectors import NetworkConfig
from agent.network.monitor import NetworkMonitor
from agent.network.ratelimit import Emission


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
                out.extend(monitor.feed(packet, last))
    except Exception as exc:  # scapy raises plain Scapy_Exception/EOFError for bad files
        raise ValueError(f"{path} is not a readable pcap capture: {exc}") from None
    out.extend(monitor.flush(last, force=True))
    return out
