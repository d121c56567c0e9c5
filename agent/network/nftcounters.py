"""What the workstation's firewall refused, per uid and destination (`net.bypass`, kind "refused").

The Kalkan nftables table (agent/proxy/nftables.py) adds every packet it refuses for a person's
uid (or the proxy's) to the sets `refused4` / `refused6`, keyed by (uid, protocol, destination,
port) with a counter.  `RefusedWatch.poll` reads those counters and turns what grew since the
last poll into events: what (protocol, port), where (address), how often (packets); never any
content.  One event per key and poll at most, so a storm is one event with `occurrences`.
"""

from __future__ import annotations

import ipaddress
import pwd
from dataclasses import dataclass, field
from typing import Any, Protocol

SETS = ("refused4", "refused6")


class _Firewall(Protocol):
    def set_elements(self, name: str) -> list[dict]: ...


@dataclass(frozen=True)
class RefusedCount:
    uid: int
    proto: str
    dst_ip: str
    dst_port: int | None
    packets: int


def read_refused(firewall: _Firewall) -> list[RefusedCount]:
    out = []
    for name in SETS:
        for element in firewall.set_elements(name):
            body = element.get("elem", element)
            value = body.get("val", body) if isinstance(body, dict) else body
            parts = value.get("concat") if isinstance(value, dict) else None
            if not parts or len(parts) != 4:
                continue
            counter = body.get("counter", {}) if isinstance(body, dict) else {}
            uid, proto, address, port = parts
            try:
                uid = int(uid)
            except (TypeError, ValueError):
                continue  # a uid nft printed by name: resolved below
            out.append(
                RefusedCount(
                    uid=uid,
                    proto=str(proto),
                    dst_ip=str(address),
                    dst_port=int(port) or None if str(proto) not in ("icmp", "ipv6-icmp") else None,
                    packets=int(counter.get("packets", 0)),
                )
            )
    return out


def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def is_noise(count: RefusedCount) -> bool:
    """Refused, counted, but not worth telling anyone: what every browser and desktop does on
    its own — QUIC (UDP 443: the browser falls back to TCP, which the proxy decides) and
    multicast/broadcast discovery (mDNS, SSDP, LLMNR)."""
    if count.proto == "udp" and count.dst_port == 443:
        return True
    try:
        address = ipaddress.ip_address(count.dst_ip)
    except ValueError:
        return False
    return address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255") or (
        address.version == 4 and str(address).endswith(".255"))


@dataclass
class RefusedWatch:
    """Turns counter growth into `net.bypass` data (kind "refused"), with the OS user."""

    seen: dict[tuple, int] = field(default_factory=dict)

    def poll(self, counts: list[RefusedCount]) -> list[tuple[str | None, dict[str, Any]]]:
        events = []
        current = {}
        for count in counts:
            key = (count.uid, count.proto, count.dst_ip, count.dst_port)
            current[key] = count.packets
            grown = count.packets - self.seen.get(key, 0)
            if grown < 0:  # the element expired and came back: all of it is new
                grown = count.packets
            if grown > 0 and not is_noise(count):
                port = f" port {count.dst_port}" if count.dst_port else ""
                events.append(
                    (
                        _user(count.uid),
                        {
                            "kind": "refused",
                            "dst_ip": count.dst_ip,
                            "dst_port": count.dst_port,
                            "detail": f"{count.proto.upper()}{port} refused by the workstation firewall",
                            "occurrences": grown,
                        },
                    )
                )
        self.seen = current
        return events
