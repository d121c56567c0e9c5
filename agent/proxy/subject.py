"""Who opened a connection: the OS user owning the client socket.

First choice: an exact `NETLINK_SOCK_DIAG` lookup by the connection's 4-tuple
(`agent.proxy.sockdiag`; constant time, tens of microseconds).  Fallback, when the
kernel refuses netlink or the 4-tuple is not known: the /proc scan below.

The kernel lists every TCP socket of the network namespace in /proc/net/tcp and
/proc/net/tcp6 with its owner's uid.  The client's socket is the one whose
*local* address is the peer address the proxy sees, so one read gives the uid
without scanning processes (cheaper than psutil.net_connections, same answer).
Unknown owner (a remote client, a race with a closed socket) → None, and the
caller falls back to the bundle's default group, the strictest.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agent.platform.accounts import user_and_groups
from agent.proxy.sockdiag import SockDiag, SockDiagUnavailable, is_remnant

log = logging.getLogger("kalkan.proxy.subject")
PROC_NET = Path("/proc/net")


@dataclass(frozen=True)
class OsUser:
    uid: int
    name: str
    groups: tuple[str, ...] = ()


def _hex_address(ip: str, port: int) -> str:
    """The /proc/net/tcp spelling of an address: host-order 32-bit words in hex, then the port."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    packed = addr.packed
    words = [packed[i:i + 4][::-1].hex().upper() for i in range(0, len(packed), 4)]
    return f"{''.join(words)}:{port:04X}"


def _candidates(ip: str, port: int) -> list[tuple[str, str]]:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
        # an IPv4 client shows in tcp, or in tcp6 as ::ffff:a.b.c.d for a dual-stack socket
        return [("tcp", _hex_address(str(addr), port)), ("tcp6", _hex_address(str(mapped), port))]
    return [("tcp6", _hex_address(str(addr), port))]


def socket_owner_uid(peer_ip: str, peer_port: int, proc_net: Path = PROC_NET) -> int | None:
    """The uid owning the TCP socket whose local address is (peer_ip, peer_port).  A time-wait
    remnant of an earlier connection from the same address and port (to another destination)
    may be listed first: it is passed over, and only a live socket's owner is an answer."""
    for table, local in _candidates(peer_ip, peer_port):
        try:
            with open(proc_net / table, encoding="ascii") as fh:
                next(fh, None)  # header
                for line in fh:
                    fields = line.split()
                    if len(fields) > 9 and fields[1] == local:
                        uid, inode = int(fields[7]), int(fields[9])
                        if not is_remnant(uid, inode):
                            return uid
        except FileNotFoundError:
            continue
    return None


@lru_cache(maxsize=256)
def os_user(uid: int) -> OsUser:
    """Name and group names of a uid (cached: accounts rarely change while the proxy runs)."""
    name, groups = user_and_groups(uid)
    return OsUser(uid=uid, name=name, groups=groups)


_diag: SockDiag | None = None
_diag_failed = False


def _sock_diag() -> SockDiag | None:
    """The process's netlink socket, opened on first use; None (and the /proc scan) if refused."""
    global _diag, _diag_failed
    if _diag is None and not _diag_failed:
        try:
            _diag = SockDiag()
        except SockDiagUnavailable as exc:
            _diag_failed = True
            log.warning("%s; falling back to scanning /proc/net/tcp (slower)", exc)
    return _diag


def owner_uid(peer: tuple[str, int], dialled: tuple[str, int] | None,
              proc_net: Path = PROC_NET) -> int | None:
    """uid of the client socket `peer → dialled` (`dialled`: what the client connected to)."""
    diag = _sock_diag() if dialled is not None else None
    if diag is not None:
        try:
            return diag.owner_uid(peer, dialled)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            log.warning("sock_diag lookup of %s failed (%s); scanning /proc instead", peer, exc)
    return socket_owner_uid(peer[0], peer[1], proc_net)


def connection_owner(peer_ip: str, peer_port: int, dialled: tuple[str, int] | None = None,
                     proc_net: Path = PROC_NET) -> OsUser | None:
    uid = owner_uid((peer_ip, peer_port), dialled, proc_net)
    return None if uid is None else os_user(uid)
