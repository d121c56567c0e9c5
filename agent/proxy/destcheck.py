"""Does a claimed name really lead to the address a connection goes to?

The proxy decides on names (the SNI, the `Host` header); a student's program chooses the
address.  So every connection of a person whose destination is an address is checked: the
address must be one that the claimed name resolves to through the school's resolvers (the
system resolver of the workstation, which the firewall allows to reach only those).  This is
Squid's `host_verify_strict`, answered from a cache so that a warm name costs a dict lookup.

* `addresses(name)`: the cached answer (None when cold or expired) — what the hot path asks;
* `resolve(name)`: the answer, asking the resolver (in a thread) when cold;
* `name_of(address)`: the reverse map of what this seat resolved, for a TLS connection that
  names nothing (no SNI): the destination is judged by the name it was last resolved for.

A mismatch is re-checked once against a fresh answer (round-robin DNS may have moved on)
before the connection is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable

DEFAULT_TTL_S = 120.0
NEGATIVE_TTL_S = 10.0
MAX_NAMES = 8192
# A browser may keep using an address its own cache holds after the resolver has moved on to
# others (rotating CDN answers): addresses a name resolved to in the last RECENT_S stay valid.
RECENT_S = 600.0
MAX_ADDRESSES = 64


_IPV4_CHARACTERS = frozenset("0123456789.")


def is_ip(text: str) -> bool:
    text = text.strip("[]")
    # Asked of a name on every connection's path, where `ipaddress` would build and format two
    # exceptions: an IPv4 address is ASCII digits and dots only, an IPv6 one always has a colon,
    # so anything else is a name without trying.
    if ":" not in text and not _IPV4_CHARACTERS.issuperset(text):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normal_ip(text: str) -> str:
    """One spelling per address (``::ffff:1.2.3.4`` → ``1.2.3.4``, ``[fd00::1]`` → ``fd00::1``)."""
    addr = ipaddress.ip_address(text.strip("[]").split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.compressed


def _system_lookup(name: str) -> frozenset[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return frozenset()
    return frozenset(normal_ip(info[4][0]) for info in infos)


class DestinationCheck:
    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S,
                 lookup: Callable[[str], frozenset[str]] = _system_lookup,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._lookup = lookup
        self._clock = clock
        self._names: dict[str, tuple[frozenset[str], float, float]] = {}  # name → (addrs, expires, fetched)
        self._reverse: dict[str, str] = {}
        self.lookups = 0

    # ---------------------------------------------------------------- cache

    def addresses(self, name: str) -> frozenset[str] | None:
        found = self._names.get(name)
        if found is None or found[1] < self._clock():
            return None
        return found[0]

    def _store(self, name: str, addrs: frozenset[str]) -> frozenset[str]:
        if len(self._names) >= MAX_NAMES:
            self._names.clear()
            self._reverse.clear()
        now = self._clock()
        previous = self._names.get(name)
        if previous is not None and now - previous[2] < RECENT_S and previous[0] - addrs:
            kept = addrs | previous[0]
            addrs = kept if len(kept) <= MAX_ADDRESSES else addrs
        self._names[name] = (addrs, now + (self.ttl_s if addrs else NEGATIVE_TTL_S), now)
        if len(self._reverse) >= 4 * MAX_NAMES:
            self._reverse.clear()
        for addr in addrs:
            self._reverse[addr] = name
        return addrs

    def name_of(self, address: str) -> str | None:
        """The name this seat last resolved to `address` (None: never seen)."""
        try:
            return self._reverse.get(normal_ip(address))
        except ValueError:
            return None

    def fresh(self, name: str, within_s: float = 1.0) -> bool:
        found = self._names.get(name)
        return found is not None and self._clock() - found[2] < within_s

    # ---------------------------------------------------------------- lookups

    def resolve_now(self, name: str) -> frozenset[str]:
        """Blocking lookup (tests, the benchmark); the proxy uses `resolve`."""
        self.lookups += 1
        return self._store(name, self._lookup(name))

    async def resolve(self, name: str, *, refresh: bool = False) -> frozenset[str]:
        if not refresh:
            found = self.addresses(name)
            if found is not None:
                return found
        self.lookups += 1
        addrs = await asyncio.to_thread(self._lookup, name)
        return self._store(name, addrs)

    async def leads_to(self, name: str, address: str) -> bool:
        """Whether `name` resolves (through the school's resolvers) to `address`."""
        try:
            wanted = normal_ip(address)
        except ValueError:
            return False
        addrs = await self.resolve(name)
        if wanted in addrs:
            return True
        if self.fresh(name):
            return False
        return wanted in await self.resolve(name, refresh=True)

    def leads_to_cached(self, name: str, address: str) -> bool | None:
        """`leads_to` from the cache only: True, or None when only a lookup can tell.
        A warm name costs two dict lookups (the address as the connection spells it is
        almost always the resolver's spelling; only otherwise is it parsed)."""
        found = self._names.get(name)
        if found is None or found[1] < self._clock():
            return None
        addrs = found[0]
        if address in addrs:
            return True
        try:
            return True if normal_ip(address) in addrs else None
        except ValueError:
            return False
