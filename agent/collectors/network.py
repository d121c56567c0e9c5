"""`NetworkCollector`: ARP spoofing, rogue DHCP, rogue IPv6 router and filter-bypass checks (000 §5.6).

A thin edge: an AF_PACKET socket captures on the default route's interface through a
kernel BPF filter (agent.network.sniffer; no scapy in the agent),
`agent.network.monitor` decides, and a storm leaves as a few events with
`occurrences` (the server's rules then make one incident of them).  The gateway
defaults to the kernel's default route when the policy names none.
"""

from __future__ import annotations

import threading
import time

from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.network.detectors import NetworkConfig
from agent.network.monitor import NetworkMonitor
from agent.network.nftcounters import RefusedWatch, read_refused
from agent.network.ratelimit import Emission
from agent.network.sniffer import LiveSniffer, build_bpf, default_route, local_addresses, socket_owner
from policy_server.protocol import CollectorHealth, PolicyBundle, Subject


class NetworkCollector(Collector):
    name = "network"

    def __init__(self, ctx: CollectorContext, *, iface: str | None = None, interval_s: float = 60.0,
                 tor_relays: frozenset[str] = frozenset(), firewall=None,
                 refused_every_s: float = 30.0) -> None:
        super().__init__(ctx)
        # What the Kalkan firewall refused (its per-uid counters) → net.bypass "refused"
        if firewall is None and ctx.platform != "fake":
            from agent.platform.firewall import LinuxFirewall

            firewall = LinuxFirewall()
        self.firewall = firewall
        self.refused_every_s = refused_every_s
        self.refused = RefusedWatch()
        self._refused_at = 0.0
        route_iface, self._route_gateway = default_route()
        self.iface = iface or route_iface
        self.interval_s = interval_s
        self.tor_relays = tor_relays
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sniffer: LiveSniffer | None = None
        self._flusher: threading.Thread | None = None
        self._error = ""
        self.monitor = NetworkMonitor(self._config(ctx.policy), interval_s=interval_s)

    def _config(self, bundle: PolicyBundle) -> NetworkConfig:
        return NetworkConfig.from_section(bundle.network, gateway_ip=self._route_gateway,
                                          local_ips=local_addresses(), tor_relays=self.tor_relays,
                                          interface=self.iface)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="network-flush", daemon=True)
        self._flusher.start()
        try:
            self._sniffer = LiveSniffer(iface=self.iface, bpf=build_bpf(self.monitor.config),
                                        on_packet=self.feed, on_ready=self.ready.set)
            self._sniffer.start()
        except Exception as exc:  # no root, no interface, no libpcap to compile the filter …
            self._error = f"cannot capture on {self.iface or 'the default interface'}: {exc}"
            self.ctx.log.error("network: %s", self._error)

    def stop(self) -> None:
        sniffer, self._sniffer = self._sniffer, None
        if sniffer is not None:
            sniffer.stop()
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
            self._flusher = None
        with self._lock:
            pending = self.monitor.flush(time.monotonic(), force=True)
        self._emit_all(pending)

    def health(self) -> CollectorHealth:
        if self._error:
            return unhealthy(self._error, failed=True)
        if self._sniffer is None or not self._sniffer.running:
            return unhealthy("capture not running")
        gateway = self.monitor.config.gateway_ip or "unknown gateway"
        return healthy(f"{self.iface}: {self.monitor.packets} packets checked, "
                       f"{self.monitor.findings} findings, gateway {gateway}")

    def on_policy(self, bundle: PolicyBundle) -> None:
        super().on_policy(bundle)
        try:
            config = self._config(bundle)
        except ValueError as exc:
            self.ctx.log.error("network: keeping the previous network policy: %s", exc)
            return
        with self._lock:
            pending = self.monitor.flush(time.monotonic(), force=True)
            self.monitor = NetworkMonitor(config, interval_s=self.interval_s)
        self._emit_all(pending)

    # ------------------------------------------------------------------ work

    def feed(self, packet) -> None:
        """One captured Ethernet frame (called on the capture thread)."""
        with self._lock:
            emissions = self.monitor.feed(packet, time.monotonic())
        self._emit_all(emissions)

    def _flush_loop(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                emissions = self.monitor.flush(time.monotonic())
            self._emit_all(emissions)
            if self.firewall is not None and time.monotonic() - self._refused_at >= self.refused_every_s:
                self.poll_refused()

    def poll_refused(self) -> int:
        """Read the firewall's refused counters; one `net.bypass` per (uid, destination) that grew
        since the last poll, with `occurrences` (what, where, how often; no content).  Returns
        how many events were sent."""
        self._refused_at = time.monotonic()
        try:
            found = self.refused.poll(read_refused(self.firewall))
        except Exception as exc:  # nft missing, no table yet: nothing to report
            self.ctx.log.debug("network: cannot read the firewall counters: %s", exc)
            return 0
        for user, data in found:
            subject = Subject(os_user=user, seat=self.ctx.seat) if user else None
            try:
                self.ctx.emit("net.bypass", data, subject=subject)
            except Exception as exc:
                self.ctx.log.error("network: could not store net.bypass: %s", exc)
        return len(found)

    def _emit_all(self, emissions: list[Emission]) -> None:
        for emission in emissions:
            user = socket_owner(*emission.local) if emission.local else None
            subject = Subject(os_user=user, seat=self.ctx.seat) if user else None
            try:
                self.ctx.emit(emission.event_type, emission.data, subject=subject)
            except Exception as exc:  # a bad event must not kill the capture thread
                self.ctx.log.error("network: could not store %s: %s", emission.event_type, exc)
