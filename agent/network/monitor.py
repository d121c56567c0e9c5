"""Detectors and rate limit together: what the live collector and the pcap reader share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.network.detectors import Detectors, NetworkConfig
from agent.network.packets import parse
from agent.network.ratelimit import Emission, RateLimiter


@dataclass
class NetworkMonitor:
    config: NetworkConfig
    interval_s: float = 60.0
    packets: int = 0
    findings: int = 0
    detectors: Detectors = field(init=False)
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.detectors = Detectors(self.config)
        self.limiter = RateLimiter(interval_s=self.interval_s)

    def feed(self, packet: bytes | Any, now: float) -> list[Emission]:
        """One Ethernet frame (bytes, or a scapy packet in tests and pcap files)."""
        self.packets += 1
        observation = parse(packet)
        if observation is None:
            return []
        finding = self.detectors.observe(observation, now)
        if finding is None:
            return self.limiter.flush(now)
        self.findings += 1
        return self.limiter.offer(finding, now)

    def flush(self, now: float, *, force: bool = False) -> list[Emission]:
        return self.limiter.flush(now, force=force)
