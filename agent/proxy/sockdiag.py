"""Exact socket-owner lookup through the kernel's `NETLINK_SOCK_DIAG` interface.

The proxy must learn which OS user opened each client connection.  Reading
/proc/net/tcp costs time proportional to *every* TCP socket on the machine (22 ms
with 1,400 sockets); `sock_diag` asks the kernel for the one socket with an exact
4-tuple and gets its uid back in one round trip (tens of microseconds), whatever
the table size.  This is what `ss` uses; no privilege is needed, and no library:
the request is a few packed structs on a raw netlink socket.

Layouts (linux/netlink.h, linux/inet_diag.h):

    nlmsghdr          u32 len, u16 type, u16 flags, u32 seq, u32 pid            16 bytes
    inet_diag_req_v2  u8 family, u8 protocol, u8 ext, u8 pad, u32 states,
                      inet_diag_sockid                                          56 bytes
    inet_diag_sockid  be16 sport, be16 dport, be32 src[4], be32 dst[4],
                      u32 if, u32 cookie[2]                                     48 bytes
    inet_diag_msg     u8 family, state, timer, retrans, inet_diag_sockid,
                      u32 expires, rqueue, wqueue, uid, inode                   72 bytes

The client's socket is the one whose *source* is the peer the proxy sees and whose
*destination* is what the client dialled: the proxy's listening address (regular
mode) or the original destination (transparent mode; mitmproxy puts it in
`client.sockname`).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import itertools
import os
import select
import socket
import struct
import threading
import time

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_TCP_STATES = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")
_REQ_HEAD = struct.Struct("=BBBBI")
_SOCKID = struct.Struct("!HH16s16s")  # ports and addresses are big-endian …
_SOCKID_TAIL = struct.Struct("=III")  # … the interface and cookie are host order
_MSG_UID = struct.Struct("=II")  # uid, inode at offset 64 of inet_diag_msg
_MSG_UID_OFFSET = 4 + 48 + 12


class SockDiagUnavailable(OSError):
    """The kernel refused the netlink socket (no sock_diag, seccomp, …): use the /proc scan."""


def _unmapped(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack listener sees ::ffff:a.b.c.d
    return addr


@functools.lru_cache(maxsize=256)
def families(src_ip: str) -> tuple[int, ...]:
    """Where to look: an IPv4 client socket is usually AF_INET, but a dual-stack client
    (an AF_INET6 socket dialling ::ffff:a.b.c.d) shows in AF_INET6 with mapped addresses."""
    if isinstance(_unmapped(src_ip), ipaddress.IPv4Address):
        return (socket.AF_INET, socket.AF_INET6)
    return (socket.AF_INET6,)


@functools.lru_cache(maxsize=512)  # a lab's few addresses, parsed once (ipaddress is slow)
def _address_bytes(ip: str, family: int) -> bytes:
    addr = _unmapped(ip)
    if family == socket.AF_INET:
        if not isinstance(addr, ipaddress.IPv4Address):
            raise ValueError(f"{ip} is not an IPv4 address")
        return addr.packed + bytes(12)
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{addr}").packed
    return addr.packed


def build_request(src: tuple[str, int], dst: tuple[str, int], seq: int, family: int | None = None) -> bytes:
    """One `SOCK_DIAG_BY_FAMILY` request for the TCP socket with exactly this 4-tuple (pure)."""
    family = family if family is not None else families(src[0])[0]
    src_bytes, dst_bytes = _address_bytes(src[0], family), _address_bytes(dst[0], family)
    body = (_REQ_HEAD.pack(family, socket.IPPROTO_TCP, 0, 0, ALL_TCP_STATES)
            + _SOCKID.pack(src[1], dst[1], src_bytes, dst_bytes)
            + _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def is_remnant(uid: int, inode: int) -> bool:
    """A socket no process holds: once a client has closed and its FIN is acknowledged, the
    kernel keeps a time-wait remnant that reports uid 0 and no inode.  Read as root it would make
    a student's send-and-close connection a system account's; its owner is unknown instead (the
    strictest group).  (A process's socket always has an inode.)"""
    return uid == 0 and inode == 0


def parse_reply(data: bytes, seq: int) -> int | None:
    """The uid in the kernel's answer, or None when it has no such socket (pure)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        payload = offset + _NLMSGHDR.size
        if msg_seq == seq:
            if msg_type == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, payload)
                if code in (0, -errno.ENOENT):
                    return None
                raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
            if msg_type == NLMSG_DONE:
                return None
            if msg_type == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG_UID_OFFSET + _MSG_UID.size:
                uid, inode = _MSG_UID.unpack_from(data, payload + _MSG_UID_OFFSET)
                return None if is_remnant(uid, inode) else uid
        offset += (length + 3) & ~3
    return None


class SockDiag:
    """One netlink socket, reused for every lookup (the proxy's event loop is one thread;
    the lock keeps other threads safe too)."""

    def __init__(self, timeout: float = 0.5) -> None:
        try:
            # Non-blocking: the kernel answers inside `send`, so the answer is read at once; a
            # socket with a timeout would poll before each send and each read (a lookup is on
            # the way of every connection to the proxy)
            self._sock = socket.socket(socket.AF_NETLINK,
                                       socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                                       NETLINK_SOCK_DIAG)
            self._sock.bind((0, 0))
        except OSError as exc:
            raise SockDiagUnavailable(exc.errno, f"NETLINK_SOCK_DIAG unavailable: {exc}") from None
        self._timeout = timeout
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def owner_uid(self, src: tuple[str, int], dst: tuple[str, int]) -> int | None:
        """The uid owning the TCP socket (src → dst), or None if the kernel has none."""
        for family in families(src[0]):
            try:
                request = build_request(src, dst, 0, family)
            except ValueError:  # e.g. a v4 client dialling a v6 address cannot be AF_INET
                continue
            uid = self._ask(request)
            if uid is not None:
                return uid
        return None

    def _ask(self, request: bytes) -> int | None:
        with self._lock:
            seq = next(self._seq) & 0xFFFFFFFF
            self._sock.send(request[:8] + struct.pack("=I", seq) + request[12:])
            deadline = 0.0
            while True:  # skip answers to earlier, timed-out requests
                try:
                    data = self._sock.recv(8192)
                except BlockingIOError:  # (not answered yet: waited for, up to the timeout)
                    deadline = deadline or time.monotonic() + self._timeout
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._poll.poll(left * 1000):
                        raise TimeoutError(errno.ETIMEDOUT, "sock_diag: no answer") from None
                    continue
                _len, _type, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, 0)
                if msg_seq == seq:
                    return parse_reply(data, seq)

    def close(self) -> None:
        self._sock.close()
