"""The kernel relay: after a pass-through decision, the bytes never come back to user space.

Why: a passed-through connection still cost a Python round per chunk each way (asyncio, or the
splice pump's epoll loop), ~40–70 µs per request/response on this machine, which kept the
pass-through slower than E2Guardian's tunnel (benchmarks/proxy/RESULTS.md).  Linux can relay
between two TCP sockets itself: a BPF "sockhash" map holding both sockets, with a stream-verdict
program attached (`BPF_PROG_TYPE_SK_SKB`) that sends every arriving segment out of the paired
socket (`bpf_sk_redirect_hash`).  The proxy decides, dials, puts the pair in the map, and from
then on only hears of the connection's end.

The program (hand-assembled below, 20 instructions; no compiler, no libbpf):

    key = bpf_get_socket_cookie(skb)            # the socket the bytes arrived on
    count = counts[key]; if not count: return SK_PASS   # not started: user space reads it
    *count += skb->len                          # (atomic)
    return bpf_sk_redirect_hash(skb, pairs, &key, 0)   # pairs[cookie(A)] = B, pairs[cookie(B)] = A

`counts` lets the end be exact: when one side closes (its FIN reaches user space as EOF), the
other side is shut for writing only after everything the kernel redirected has reached that
socket (its acked bytes + its send queue have grown by at least the count).  Without that wait
the FIN could overtake the last bytes, which the kernel moves on a work queue.

Privileges: creating the maps and loading the program need CAP_BPF and CAP_NET_ADMIN.  The agent
(root) creates them (`create_maps`) and passes the two map descriptors to the proxy, which runs
as its own unprivileged account and only adds and removes its own sockets (no capability needed
for that on a map descriptor one holds).  mitmdump run as root (tests, benchmarks) creates its
own.  Where neither works (an old kernel, a container without BPF), `available()` says why and
the caller keeps the user-space relay.

What cannot be seen this way: bytes a client sent after the ClientHello but before the pair was
in the map (TLS 0-RTT early data).  They are read once, right after the pair is added, and sent
on by hand before the ClientHello leaves (so nothing can be answered before).

The direct path (student → server, no hop). The stream-verdict redirect moves each segment on a
kernel work queue: a wake-up and a hop on the proxy's socket per request, which kept the page
behind E2Guardian's tunnel (RESULTS.md, fifth to tenth sessions). The student's own socket is on
this machine, so its bytes can be redirected where they are written, as Cilium accelerates local
sockets: a `sock_ops` program on the cgroup puts every TCP socket that connects to a watched port
(the proxy's explicit port, 443) into `clients`, a sockhash whose `sk_msg` program looks the
socket's own flow (family, ports, addresses as that socket sees them, and its network namespace)
up in `direct`; once the proxy has put the pair there (as the pair starts, just before the
ClientHello leaves), each `send` of the student goes straight into the server socket's send queue,
in the student's own system call. The answers still come back through the stream verdict (the
server's socket is not a local sender). A flow not there (an unwatched port, a v4-mapped socket, a
full map) is passed to the proxy's socket as before, and the stream verdict relays it: the direct
path is only ever faster, never needed. The order of the client's bytes holds because the client
sends nothing between its ClientHello and the server's answer except TLS early data, which is
already waiting in the proxy's socket and is sent with the hello (early data sent in the very
microseconds between the direct entry and the hello's `send` would reach the server before the
hello: that connection fails its TLS check, it never reaches anywhere else). `direct` counts the
bytes, for the tests and for `bpftool`.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import platform
import select
import socket
import struct
import sys
import threading
from typing import Any, Protocol

log = logging.getLogger("kalkan.proxy.kernel_relay")

# --- the bpf(2) system call ------------------------------------------------------------------

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "i686": 357}.get(platform.machine())
_BPF_MAP_CREATE, _BPF_MAP_LOOKUP, _BPF_MAP_UPDATE, _BPF_MAP_DELETE, _BPF_MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_LINK_CREATE = 5, 8, 28
_MAP_HASH, _MAP_SOCKHASH, _MAP_RINGBUF = 1, 18, 27
_PROG_SOCK_OPS, _PROG_SK_SKB, _PROG_SK_MSG = 13, 14, 16
_ATTACH_CGROUP_SOCK_OPS, _ATTACH_STREAM_VERDICT, _ATTACH_MSG_VERDICT = 3, 5, 7
_HELPER_LOOKUP, _HELPER_DELETE, _HELPER_SOCKET_COOKIE = 1, 3, 46
_HELPER_SOCK_HASH_UPDATE, _HELPER_MSG_REDIRECT_HASH, _HELPER_REDIRECT_HASH = 70, 71, 72
_HELPER_RINGBUF_OUTPUT = 130
_SOCK_OPS_ACTIVE_ESTABLISHED = 4  # a socket of this machine finished its connect()
_SO_ORIGINAL_DST = 80  # (SOL_IP and SOL_IPV6 alike)
_SO_COOKIE = 57
_SK_PASS = 1
_TIOCOUTQ = 0x5411
_TCP_INFO_LEN = 232
_TCPI_BYTES_ACKED = 120  # offset of tcpi_bytes_acked in struct tcp_info
MAX_PAIRS = 16384

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: bytes) -> int:
    if _SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"no bpf system call known for {platform.machine()}")
    buf = ctypes.create_string_buffer(attr, 128)
    result = _libc.syscall(_SYS_BPF, cmd, buf, 128)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class _ElemMemory(threading.local):
    """This thread's memory for one map-element call: the bpf attribute (32 bytes), then the key,
    then the value.  One `pack_into` and one system call per element: making ctypes buffers for
    the key, the value and the attribute cost more than the call itself, ~8 times a relayed
    connection (benchmarks/proxy/RESULTS.md, "seventh session")."""

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(48)
        self.key = ctypes.addressof(self.buf) + 32
        self.value = self.key + 8


_ELEM = _ElemMemory()


def _elem(map_fd: int, cmd: int, cookie: int, value: int | ctypes.Array | None = None,
          flags: int = 0) -> None:
    """One element of a map keyed by a socket cookie (8-byte keys and values): `value` an int to
    store, a ctypes buffer to read into (a lookup), or None (a delete)."""
    if _SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"no bpf system call known for {platform.machine()}")
    mine = _ELEM
    if value is None:
        value_at, stored = 0, 0
    elif isinstance(value, int):
        value_at, stored = mine.value, value
    else:
        value_at, stored = ctypes.addressof(value), 0
    # (update, delete and lookup only read the attribute: the kernel writes a lookup's value)
    struct.pack_into("IIQQQQQ", mine.buf, 0, map_fd, 0, mine.key, value_at, flags, cookie, stored)
    if _libc.syscall(_SYS_BPF, cmd, mine.buf, 32) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class _FlowMemory(threading.local):
    """As `_ElemMemory`, for the direct path's maps: attribute, key (a flow, up to 56 bytes),
    value (up to 16): four calls a passed-through connection."""

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(32 + 56 + 16)
        self.key = ctypes.addressof(self.buf) + 32
        self.value = self.key + 56


_FLOW = _FlowMemory()


def _flow_elem(map_fd: int, cmd: int, key: bytes,
               value: int | bytes | ctypes.Array | None = None) -> None:
    """One element of a map keyed by a flow (`flow_key`), or any key up to 56 bytes.  `value`: an
    int or bytes (up to 16) to store, a buffer to read into, None to delete."""
    if _SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"no bpf system call known for {platform.machine()}")
    mine = _FLOW
    if value is None or isinstance(value, ctypes.Array):
        at = 0 if value is None else ctypes.addressof(value)
        struct.pack_into("IIQQQ56s", mine.buf, 0, map_fd, 0, mine.key, at, 0, key)
    else:
        stored = struct.pack("Q", value) if isinstance(value, int) else value
        struct.pack_into("IIQQQ56s16s", mine.buf, 0, map_fd, 0, mine.key, mine.value, 0, key, stored)
    if _libc.syscall(_SYS_BPF, cmd, mine.buf, 32) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# --- the programs ------------------------------------------------------------------------------

def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _load_map(dst: int, map_fd: int) -> bytes:  # 64-bit immediate, src 1 = "this is a map fd"
    return _insn(0x18, dst, 1, 0, map_fd) + _insn(0)


# Bytes the stream verdict moves from one socket; after them, user space relays that direction.
# Why a budget: a redirected segment is taken off the sending side's receive queue at once and
# queued for the other socket without any limit (the kernel has no back-pressure on this path),
# so a side that sends faster than the other takes (an upload to a slow server, a download the
# student does not read) would queue without end in kernel memory: a student's program could
# exhaust it in seconds.  Past the budget the program passes the bytes to the socket's own
# receive queue, which is bounded (TCP's window closes), and the proxy relays them by hand,
# waiting for the other side (`Pair.by_hand`).  Never back: the order holds only one way.
KERNEL_BUDGET = 4 << 20

# The signal to user space.  The kernel wakes whoever polls a socket for input after each segment
# it redirects, although nothing is left to read: a wake-up of the proxy per answer the student
# gets, on the CPU the student's program is about to run on (benchmarks/proxy/RESULTS.md,
# "twelfth session").  So the relay does not poll its sockets for input while the kernel carries
# them (only for their end: `KernelRelay.quiet`); instead, when a socket's bytes start coming to
# user space (its budget spent, or the direct path left), the program writes the socket's cookie
# to this ring buffer, which the relay polls.  TOLD, added to the count, says that was done (once
# per socket; a full ring is tried again at the next segment).
RING_SIZE = 1 << 16  # 4,096 signals; at most three per pair, read at once
TOLD = 1 << 40


def _tell(ring_fd: int, key_at: int, mark: int | None = None) -> list[bytes]:
    """Write the cookie at r10+`key_at` to the ring; then, if the ring took it, mark the count
    that r`mark` points to as told.  Spends r0-r5."""
    tell = [_load_map(1, ring_fd), _insn(0xBF, 2, 10), _insn(0x07, 2, imm=key_at),
            _insn(0xB7, 3, imm=8), _insn(0xB7, 4, imm=0),
            _insn(0x85, imm=_HELPER_RINGBUF_OUTPUT)]
    if mark is None:
        return tell
    return tell + [_insn(0x55, 0, 0, 3, 0),                    # the ring full: at a later segment
                   _insn(0xB7, 1, imm=1), _insn(0x67, 1, imm=40),  # r1 = TOLD
                   _insn(0xDB, mark, 1, 0, 0)]                 # atomic *r<mark> += TOLD


def program(pairs_fd: int, counts_fd: int, ring_fd: int | None = None) -> bytes:
    """The stream verdict: the pair started and the budget not spent → out of the peer socket;
    the budget spent → to user space (told through the ring, once)."""
    spent = [_insn(0xB7, 0, imm=_SK_PASS), _insn(0x95)]
    if ring_fd is not None:
        tell = _tell(ring_fd, -8, mark=7)
        spent = [_insn(0xBF, 7, 0),                                 # r7 = &count
                 _insn(0xB7, 2, imm=1), _insn(0x67, 2, imm=40),     # r2 = TOLD
                 _insn(0x3D, 1, 2, _count(tell)),                   # told already: pass on
                 *tell, *spent]
    go_on = [
        _insn(0x61, 1, 6, 0),                       # r1 = skb->len
        _insn(0xDB, 0, 1, 0, 0),                    # atomic *r0 += r1
        _insn(0xBF, 1, 6),
        _load_map(2, pairs_fd),
        _insn(0xBF, 3, 10), _insn(0x07, 3, imm=-8),
        _insn(0xB7, 4, imm=0),                      # flags 0: out of the peer socket
        _insn(0x85, imm=_HELPER_REDIRECT_HASH),
        _insn(0x95),                                # return its verdict
    ]
    return b"".join([
        _insn(0xBF, 6, 1),                          # r6 = skb
        _insn(0x85, imm=_HELPER_SOCKET_COOKIE),     # r0 = cookie of the receiving socket
        _insn(0x7B, 10, 0, -8),                     # key on the stack
        _load_map(1, counts_fd),
        _insn(0xBF, 2, 10), _insn(0x07, 2, imm=-8),
        _insn(0x85, imm=_HELPER_LOOKUP),            # r0 = &counts[key] or NULL
        _insn(0x55, 0, 0, 2, 0),                    # a count: the pair is started, go on
        _insn(0xB7, 0, imm=_SK_PASS),               # none: not started, user space reads it
        _insn(0x95),
        _insn(0x79, 1, 0, 0),                       # r1 = bytes moved so far (and TOLD)
        _insn(0x35, 1, 0, _count(go_on), KERNEL_BUDGET),  # the budget spent: user space from now on
        *go_on, *spent,
    ])


def _count(parts: list[bytes]) -> int:
    """How many instructions (a map load counts two)."""
    return sum(len(part) for part in parts) // 8


# The direct path's programs.  Both keep to the context fields and helpers their program types
# allow: `sk_msg` has no socket cookie, hence a flow key built from the socket's own addresses,
# and its network namespace: the cgroup program sees every namespace, and a student may make one
# (an unprivileged user namespace) whose socket has another flow's four addresses and ports.
FLOW_KEY_LEN = 56  # family, local port, remote port, 0, netns cookie (8), local (16), remote (16)
_HELPER_NETNS_COOKIE = 122
_SO_NETNS_COOKIE = 71
_AF_INET6 = 10
_MSG_FAMILY, _MSG_REMOTE_IP4, _MSG_LOCAL_IP4 = 16, 20, 24  # offsets in struct sk_msg_md
_MSG_REMOTE_IP6, _MSG_LOCAL_IP6, _MSG_REMOTE_PORT, _MSG_LOCAL_PORT, _MSG_SIZE = 28, 44, 60, 64, 68
_OPS_REMOTE_PORT = 64  # in struct bpf_sock_ops (its `op` is at 0)


def sockops_program(ports_fd: int, clients_fd: int) -> bytes:
    """On a finished connect(): a socket whose remote port is watched joins `clients` (so the
    message program sees its sends)."""
    out = 21  # the `return 1` below
    return b"".join([
        _insn(0xBF, 6, 1),                                   # 0  r6 = ctx
        _insn(0x61, 2, 6, 0),                                # 1  r2 = ctx->op
        _insn(0x55, 2, 0, out - 3, _SOCK_OPS_ACTIVE_ESTABLISHED),  # 2
        _insn(0x61, 2, 6, _OPS_REMOTE_PORT),                 # 3  as the message program sees it
        _insn(0x63, 10, 2, -4),                              # 4
        _load_map(1, ports_fd),                              # 5, 6
        _insn(0xBF, 2, 10), _insn(0x07, 2, imm=-4),          # 7, 8
        _insn(0x85, imm=_HELPER_LOOKUP),                     # 9
        _insn(0x15, 0, 0, out - 11, 0),                      # 10 not watched
        _insn(0xBF, 1, 6),                                   # 11
        _insn(0x85, imm=_HELPER_SOCKET_COOKIE),              # 12 (any key: the map is a set)
        _insn(0x7B, 10, 0, -16),                             # 13
        _insn(0xBF, 1, 6),                                   # 14
        _load_map(2, clients_fd),                            # 15, 16
        _insn(0xBF, 3, 10), _insn(0x07, 3, imm=-16),         # 17, 18
        _insn(0xB7, 4, imm=0),                               # 19
        _insn(0x85, imm=_HELPER_SOCK_HASH_UPDATE),           # 20 (full map: the socket stays out)
        _insn(0xB7, 0, imm=1),                               # 21
        _insn(0x95),
    ])


# Bytes a flow may send direct.  A send the server's socket cannot take now (a full send queue, a
# non-blocking student) fails with EAGAIN although the student's own socket polls writable, so an
# upload to a slow server would spin; every try counts, and past this the flow's bytes go to the
# proxy's socket and user space relays them (`Pair.by_hand`: bounded, it waits for the server).
# Leaving the direct path is safe at any time: its bytes are in the server's socket before the
# send returns (only the way in must wait for the hello).  A page's requests are far below it.
DIRECT_LIMIT = 1 << 20


def msg_program(direct_fd: int, pairs_fd: int, counts_fd: int, ring_fd: int | None = None) -> bytes:
    """On each send of a socket in `clients`: its flow in `direct` (value: bytes so far, the
    cookie of the proxy's socket of the pair) → count the bytes and send them out of the pair's
    server socket (`pairs[that cookie]`, there from `stage` on), up to `DIRECT_LIMIT`; else they
    go their usual way."""
    at = -FLOW_KEY_LEN  # the key on the stack
    local, remote = at + 24, at + 40
    head = [_insn(0xBF, 6, 1),
            _insn(0x85, imm=_HELPER_NETNS_COOKIE), _insn(0x7B, 10, 0, at + 16),  # (r1: the context)
            _insn(0x61, 1, 6, _MSG_FAMILY), _insn(0x63, 10, 1, at),
            _insn(0x61, 2, 6, _MSG_LOCAL_PORT), _insn(0x63, 10, 2, at + 4),
            _insn(0x61, 2, 6, _MSG_REMOTE_PORT), _insn(0x63, 10, 2, at + 8),
            _insn(0x62, 10, 0, at + 12, 0)]
    v4 = [_insn(0x61, 2, 6, _MSG_LOCAL_IP4), _insn(0x63, 10, 2, local)]
    v4 += [_insn(0x62, 10, 0, local + 4 + 4 * i, 0) for i in range(3)]
    v4 += [_insn(0x61, 2, 6, _MSG_REMOTE_IP4), _insn(0x63, 10, 2, remote)]
    v4 += [_insn(0x62, 10, 0, remote + 4 + 4 * i, 0) for i in range(3)]
    v6: list[bytes] = []
    for i in range(4):
        v6 += [_insn(0x61, 2, 6, _MSG_LOCAL_IP6 + 4 * i), _insn(0x63, 10, 2, local + 4 * i),
               _insn(0x61, 2, 6, _MSG_REMOTE_IP6 + 4 * i), _insn(0x63, 10, 2, remote + 4 * i)]
    tail = [_load_map(1, direct_fd), _insn(0xBF, 2, 10), _insn(0x07, 2, imm=at),
            _insn(0x85, imm=_HELPER_LOOKUP),
            _insn(0x55, 0, 0, 2, 0),                   # in `direct`: go on
            _insn(0xB7, 0, imm=_SK_PASS), _insn(0x95),  # not: the usual way
            _insn(0x79, 1, 0, 0),                      # r1 = bytes so far
            _insn(0x25, 1, 0, 10, DIRECT_LIMIT),       # past the limit: leave (below)
            _insn(0x61, 1, 6, _MSG_SIZE), _insn(0xDB, 0, 1, 0, 0),
            _insn(0xBF, 1, 6), _load_map(2, pairs_fd),
            _insn(0xBF, 3, 0), _insn(0x07, 3, imm=8),  # the key: the value's second word
            _insn(0xB7, 4, imm=0),                     # flags 0: out of the server's socket
            _insn(0x85, imm=_HELPER_MSG_REDIRECT_HASH), _insn(0x95),
            # leave: the proxy's socket of this pair loses its count, so what the student sends
            # from now on reaches user space, behind every direct byte (see DIRECT_LIMIT); the
            # relay is told (at each send, until it takes the flow out of `direct`)
            _insn(0x79, 1, 0, 8), _insn(0x7B, 10, 1, at - 8),  # the cookie, below the flow key
            _insn(0xBF, 2, 0), _insn(0x07, 2, imm=8),  # the key: the value's second word
            _load_map(1, counts_fd), _insn(0x85, imm=_HELPER_DELETE),
            *(_tell(ring_fd, at - 8) if ring_fd is not None else []),
            _insn(0xB7, 0, imm=_SK_PASS), _insn(0x95)]
    return b"".join(head + [_insn(0x15, 1, 0, len(v4) + 1, _AF_INET6)] + v4
                    + [_insn(0x05, off=len(v6))] + v6 + tail)


def _ip_bytes(ip: str) -> tuple[int, bytes]:
    if "." in ip:  # IPv4, or IPv4 mapped in IPv6 (a dual-stack socket's view of an IPv4 peer)
        return socket.AF_INET, socket.inet_aton(ip.rsplit(":", 1)[-1]) + bytes(12)
    return _AF_INET6, socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])


def _remote_port_word(port: int) -> int:
    """A remote port as both programs load it: network order, in the word's high half on a
    little-endian machine."""
    return socket.htons(port) << 16 if sys.byteorder == "little" else port


def flow_key(local: tuple, remote: tuple, netns: int) -> bytes:
    """The key the message program builds for a socket with these (address, port) ends in the
    network namespace whose cookie is `netns`."""
    family, local_ip = _ip_bytes(local[0])
    _, remote_ip = _ip_bytes(remote[0])
    head = struct.pack("IIIIQ", family, local[1], _remote_port_word(remote[1]), 0, netns)
    return head + local_ip + remote_ip


def netns_cookie(sock: socket.socket) -> int:
    """The cookie of the network namespace `sock` lives in (the student's socket, connected to
    it, lives in the same one)."""
    return struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8))[0]


def _original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """Where the client meant to connect, when the firewall redirected it here (conntrack)."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
            return socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]
        raw = sock.getsockopt(socket.IPPROTO_IPV6, _SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from("!H", raw, 2)[0]
    except OSError:  # not redirected (the explicit port), or no conntrack
        return None


def student_flow(sock: socket.socket) -> bytes:
    """The flow key of the socket at the other end of `sock` (the proxy's accepted socket), as
    that socket sees itself: its local end is our peer, its remote end the original destination
    (or our own address, when it connected to the proxy's port)."""
    return flow_key(sock.getpeername(), _original_destination(sock) or sock.getsockname(), netns_cookie(sock))


class Direct:
    """The direct path's descriptors.  The proxy needs `direct` (hash, flow → bytes sent direct
    and the pair's cookie in `pairs`, where the server's socket is) and `ports` (the watched
    remote ports); `clients` and the cgroup link stay with whoever made them (the agent)."""

    def __init__(self, direct_fd: int, ports_fd: int, keep: tuple[int, ...] = ()) -> None:
        self.direct_fd, self.ports_fd = direct_fd, ports_fd
        self.keep = keep

    def watch(self, port: int) -> None:
        """Sockets connecting to this remote port join `clients` from now on."""
        word = struct.pack("I", _remote_port_word(port))
        _flow_elem(self.ports_fd, _BPF_MAP_UPDATE, word, struct.pack("I", 1))


def _clear(map_fd: int, key_size: int) -> int:
    """Delete every element of a map; how many there were."""
    key = ctypes.create_string_buffer(key_size)
    cleared = 0
    while True:
        try:  # BPF_MAP_GET_NEXT_KEY without a key: the first one
            _bpf(_BPF_MAP_GET_NEXT_KEY, struct.pack("IIQQ", map_fd, 0, 0, ctypes.addressof(key)))
            _bpf(_BPF_MAP_DELETE, struct.pack("IIQ", map_fd, 0, ctypes.addressof(key)))
        except OSError:
            return cleared
        cleared += 1


class Maps:
    """The maps (descriptors): `pairs` (sockhash, cookie → the peer socket), `counts` (hash,
    cookie → bytes redirected from that socket), and the direct path's (`Direct`, or None where
    this kernel or machine has none)."""

    def __init__(self, pairs_fd: int, counts_fd: int, direct: Direct | None = None,
                 ring: int | None = None) -> None:
        self.pairs_fd, self.counts_fd = pairs_fd, counts_fd
        self.direct = direct
        self.ring = ring  # the signals' ring buffer (`TOLD`), or None
        self.why_not_direct = ""
        self._signals: Signals | None = None

    def signals(self) -> Signals | None:
        """The ring's reader (one per process: it keeps the read position)."""
        if self._signals is None and self.ring is not None:
            self._signals = Signals(self.ring)
        return self._signals

    def passed_fds(self) -> tuple[int, ...]:
        """The descriptors the proxy's process is given (kept open in it; `option()` names them)."""
        direct = self.direct
        ring = () if self.ring is None else (self.ring,)
        extra = () if direct is None else (direct.direct_fd, direct.ports_fd)
        return (self.pairs_fd, self.counts_fd, *ring, *extra)

    def option(self) -> str:
        return ",".join(str(fd) for fd in self.passed_fds())

    def clear_leftovers(self) -> int:
        """Forget the entries of a proxy that ended without cleaning up (killed, crashed): counts
        and flows stay in the agent's maps, and a stale flow would send a later connection with
        the same addresses nowhere.  Called by a proxy taking the maps over, before any pair."""
        cleared = _clear(self.counts_fd, 8)
        if self.direct is not None:
            cleared += _clear(self.direct.direct_fd, FLOW_KEY_LEN)
        signals = self.signals()
        if signals is not None:
            cleared += len(signals.read())  # (a dead proxy's sockets: nobody to tell)
        return cleared

    @classmethod
    def from_option(cls, text: str) -> Maps:
        """'pairs,counts', then the ring if there is one, then 'direct,ports' if there is one."""
        fds = [int(fd) for fd in text.split(",")]
        if len(fds) not in (2, 3, 4, 5):
            raise ValueError(f"{text!r}: expected 'pairs,counts[,ring][,direct,ports]'")
        ring = fds[2] if len(fds) in (3, 5) else None
        direct = Direct(*fds[-2:]) if len(fds) >= 4 else None
        return cls(fds[0], fds[1], direct, ring=ring)


class Signals:
    """The ring buffer's reader (the kernel's BPF ring: a consumer page we write, then the
    producer page and the data, mapped twice in a row so that a record never wraps)."""

    _BUSY, _DISCARD, _LENGTH = 1 << 31, 1 << 30, (1 << 30) - 1

    def __init__(self, ring_fd: int) -> None:
        page = mmap.PAGESIZE
        self.fd = ring_fd
        self._consumer = mmap.mmap(ring_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer = mmap.mmap(ring_fd, page + 2 * RING_SIZE, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)
        self._data = page
        self._lock = threading.Lock()  # (several event loops of one process share the reader)

    def read(self) -> list[int]:
        """The cookies written since the last read."""
        cookies = []
        with self._lock:
            consumer = struct.unpack_from("Q", self._consumer, 0)[0]
            producer = struct.unpack_from("Q", self._producer, 0)[0]
            while consumer < producer:
                at = self._data + (consumer & (RING_SIZE - 1))
                header = struct.unpack_from("I", self._producer, at)[0]
                if header & self._BUSY:  # (being written: the next wake-up reads it)
                    break
                length = header & self._LENGTH
                if not header & self._DISCARD and length == 8:
                    cookies.append(struct.unpack_from("Q", self._producer, at + 8)[0])
                consumer += (length + 8 + 7) & ~7
            struct.pack_into("Q", self._consumer, 0, consumer)
        return cookies


PAIRS_NAME, COUNTS_NAME, RING_NAME = b"kalkan_pairs", b"kalkan_counts", b"kalkan_told"  # (`bpftool map`)


_NO_PREALLOC = 1


def _map_attr(kind: int, name: bytes, key_size: int = 8, value_size: int = 8,
              entries: int = 2 * MAX_PAIRS, flags: int = 0) -> bytes:
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name
    return struct.pack("IIIIIII16s", kind, key_size, value_size, entries, flags, 0, 0, name)


def _load(kind: int, code: bytes, name: bytes) -> int:
    insns = ctypes.create_string_buffer(code, len(code))
    licence = ctypes.create_string_buffer(b"GPL")  # the helpers used need a GPL program
    return _bpf(_BPF_PROG_LOAD, struct.pack(
        "IIQQIIQII16s", kind, len(code) // 8, ctypes.addressof(insns),
        ctypes.addressof(licence), 0, 0, 0, 0, 0, name))


CGROUP2_FALLBACK = "/run/kalkan/cgroup2"


def _cgroup2_root() -> str:
    """Where this process sees the cgroup-v2 hierarchy's root.  None in sight (`ip netns exec`
    mounts a fresh /sys over it, in a mount namespace of its own): mounted here, in that
    namespace; a systemd machine always has one (/sys/fs/cgroup, or /sys/fs/cgroup/unified)."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    os.makedirs(CGROUP2_FALLBACK, exist_ok=True)
    if _libc.mount(b"cgroup2", CGROUP2_FALLBACK.encode(), b"cgroup2", 0, None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"no cgroup2 hierarchy is mounted and mounting one failed ({os.strerror(code)})")
    return CGROUP2_FALLBACK


def create_maps(direct: bool = True) -> Maps:
    """Maps with the programs attached (needs CAP_BPF and CAP_NET_ADMIN).  OSError says why not.
    The direct path is added where this machine allows it (`Maps.why_not_direct` says why not)."""
    made: list[int] = []
    prog = -1
    try:
        pairs = _bpf(_BPF_MAP_CREATE, _map_attr(_MAP_SOCKHASH, PAIRS_NAME))
        made.append(pairs)
        counts = _bpf(_BPF_MAP_CREATE, _map_attr(_MAP_HASH, COUNTS_NAME))
        made.append(counts)
        ring = _create_ring()
        if ring is not None:
            made.append(ring)
        prog = _load(_PROG_SK_SKB, program(pairs, counts, ring), b"kalkan_relay")
        _bpf(_BPF_PROG_ATTACH, struct.pack("IIII", pairs, prog, _ATTACH_STREAM_VERDICT, 0))
    except OSError:
        for fd in made:
            os.close(fd)
        raise
    finally:
        if prog >= 0:
            os.close(prog)  # the map holds the program now
    maps = Maps(pairs, counts, ring=ring)
    if direct:
        try:
            maps.direct = _create_direct(pairs, counts, ring)
        except OSError as exc:
            maps.why_not_direct = f"no direct path ({exc})"
            log.info("kalkan: kernel relay: %s", maps.why_not_direct)
    return maps


def _create_ring() -> int | None:
    """The signals' ring buffer (`RING_SIZE`); None on a kernel without ring buffers (before
    5.8): the relay then polls its sockets for input, as before."""
    try:
        return _bpf(_BPF_MAP_CREATE, _map_attr(_MAP_RINGBUF, RING_NAME, 0, 0, RING_SIZE))
    except OSError as exc:
        log.info("kalkan: kernel relay: no ring buffer (%s); the proxy is woken at each segment", exc)
        return None


def _create_direct(pairs_fd: int, counts_fd: int, ring_fd: int | None = None) -> Direct:
    made: list[int] = []
    progs: list[int] = []
    try:
        # (the flows' hash is not preallocated: 4 MiB of kernel memory for a lab seat's few pairs)
        for kind, name, key_size, value_size, entries, flags in (
                (_MAP_SOCKHASH, b"kalkan_clients", 8, 8, 2 * MAX_PAIRS, 0),
                (_MAP_HASH, b"kalkan_direct", FLOW_KEY_LEN, 16, MAX_PAIRS, _NO_PREALLOC),
                (_MAP_HASH, b"kalkan_ports", 4, 4, 64, 0)):
            made.append(_bpf(_BPF_MAP_CREATE, _map_attr(kind, name, key_size, value_size, entries, flags)))
        clients, counted, ports = made
        code = msg_program(counted, pairs_fd, counts_fd, ring_fd)
        progs.append(_load(_PROG_SK_MSG, code, b"kalkan_direct"))
        _bpf(_BPF_PROG_ATTACH, struct.pack("IIII", clients, progs[-1], _ATTACH_MSG_VERDICT, 0))
        progs.append(_load(_PROG_SOCK_OPS, sockops_program(ports, clients), b"kalkan_clients"))
        cgroup = os.open(_cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY)
        try:  # a link: detached when its last descriptor closes (the agent's exit), never left behind
            link = _bpf(_BPF_LINK_CREATE, struct.pack("IIII", progs[-1], cgroup, _ATTACH_CGROUP_SOCK_OPS, 0)
                        + bytes(32))
        finally:
            os.close(cgroup)
    except OSError:
        for fd in made:
            os.close(fd)
        raise
    finally:
        for fd in progs:
            os.close(fd)
    return Direct(counted, ports, keep=(clients, link))


# --- one relayed pair --------------------------------------------------------------------------

class End(Protocol):
    def close(self) -> None: ...


def _cookie(sock: socket.socket) -> int:
    return struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, _SO_COOKIE, 8))[0]


def _has_input(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _written(sock: socket.socket) -> int:
    """Bytes ever put into this socket's send queue (acked + still queued).  An active open
    counts its SYN too; only differences of this value are used."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    queued = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), _TIOCOUTQ, queued)
    return struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0] + queued[0]


FLUSH_WAIT_S = 10.0  # the last bytes not taken on for this long: the half is shut anyway
HALF_OPEN_S = 120.0  # one side closed: the other gets this long to finish
_POLL_S = 0.001
_POLL_MAX_S = 0.05  # waiting for the kernel's bytes to reach a slow receiver: polled less often
_CHUNK = 1 << 18  # read by hand at once (the bulk past the budget)


class _Side:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cookie = _cookie(sock)
        self.written_at_start = 0
        self.sent_by_hand = 0  # bytes this relay took to write to the socket itself
        self.pending = bytearray()  # … of which not yet in its send queue
        self.held = False  # its reading is stopped until its peer takes the pending bytes
        self.kernel_done = False  # all the kernel moved from it has reached its peer (budget spent)
        self.eof = False  # its peer said it will send no more
        self.shut = False  # its write half is shut (its peer's EOF passed on)
        self.quiet = False  # watched for its end only, while the kernel carries its bytes (`TOLD`)


class Pair:
    def __init__(self, relay: KernelRelay, client: socket.socket, server: socket.socket) -> None:
        self.relay = relay
        self.end: End | None = None  # set by `KernelRelay.start`
        self.client, self.server = _Side(client), _Side(server)
        self.done = False
        self.timer: asyncio.TimerHandle | None = None
        self.flow: bytes | None = None  # the student's flow while its sends go direct

    def peer(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    def readable(self, side: _Side) -> None:
        """Only an EOF, an error, or bytes the program passed wake us: from before the pair was
        in the map, or past the kernel's budget (`KERNEL_BUDGET`, `DIRECT_LIMIT`)."""
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return  # a segment the program has not taken yet
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the kernel's report of a FIN it could not redirect
                # (reported as an error: uvloop, like libuv, stops watching a socket on an error,
                # where asyncio's selector watches on; watched again, the end still wakes us)
                loop = self.relay.loop
                loop.remove_reader(side.sock.fileno())
                loop.add_reader(side.sock.fileno(), self.readable, side)
                return
            self.finish(reset=True)  # a reset (or timeout) on one side resets the other
            return
        if data:
            self.by_hand(side, data)
            return
        side.eof = True
        self.relay.loop.remove_reader(side.sock.fileno())
        if side is self.client:
            self.relay.undirect(self)  # the student sends no more: nothing may take its flow's entry
        self._flush_then_shut(self.peer(side), side)

    # --- bytes relayed by hand: after every byte the kernel moved the same way, at the pace of
    # --- the receiving side (its send queue full: the sender is not read, its window closes)

    def by_hand(self, source: _Side, data: bytes) -> None:
        target = self.peer(source)
        target.sent_by_hand += len(data)
        if source.kernel_done and not target.pending:  # the bulk after the budget: straight on
            try:
                sent = target.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.finish(reset=True)
                return
            if sent == len(data):
                return
            data = data[sent:]
        target.pending += data
        self._send_pending(source, target, _POLL_S)

    def _kernel_bytes_in(self, source: _Side, target: _Side) -> bool:
        """May bytes from `source` be written by hand now, after every byte the kernel moved the
        same way?  A count under the budget means these bytes were passed before the pair
        started (or by the direct path's leaving, whose bytes are already in): they go at once."""
        if source.kernel_done:
            return True
        moved = self.relay.moved(source)
        if moved < KERNEL_BUDGET:
            return True
        handed = target.sent_by_hand - len(target.pending)
        if _written(target.sock) - target.written_at_start < moved + handed:
            return False
        source.kernel_done = True  # (the count is final: the program no longer adds to it)
        return True

    def _send_pending(self, source: _Side, target: _Side, poll: float) -> None:
        if self.done or not target.pending:
            return
        try:
            if not self._kernel_bytes_in(source, target):
                self._hold(source)
                self.relay.loop.call_later(poll, self._send_pending, source, target,
                                           min(poll * 2, _POLL_MAX_S))
                return
            sent = target.sock.send(target.pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.finish(reset=True)
            return
        del target.pending[:sent]
        if target.pending:  # its send queue is full: on when it can take more
            self._hold(source)
            self.relay.loop.add_writer(target.sock.fileno(), self._writable, source, target)
        elif source.held:
            source.held = False
            self.relay.watch(self, source, quiet=False)

    def _writable(self, source: _Side, target: _Side) -> None:
        self.relay.loop.remove_writer(target.sock.fileno())
        self._send_pending(source, target, _POLL_S)

    def _hold(self, source: _Side) -> None:
        if not source.held and not source.eof:
            source.held = True
            self.relay.unwatch(source)

    def _flush_then_shut(self, target: _Side, source: _Side,
                         progress: tuple[int, float] | None = None) -> None:
        """Shut `target` for writing once every byte from `source` has reached it; given up only
        when none has moved for FLUSH_WAIT_S (a slow receiver still gets all of them)."""
        if self.done:
            return
        loop = self.relay.loop
        try:
            expected = self.relay.moved(source) + target.sent_by_hand
            arrived = _written(target.sock) - target.written_at_start
        except OSError:
            arrived, expected = 0, 0
        if arrived < expected:
            if progress is None or arrived > progress[0]:
                progress = (arrived, loop.time())
            if loop.time() - progress[1] < FLUSH_WAIT_S:
                loop.call_later(_POLL_S, self._flush_then_shut, target, source, progress)
                return
        try:
            target.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        target.shut = True
        if self.client.shut and self.server.shut:
            self.finish()
        elif self.timer is None:
            self.timer = loop.call_later(HALF_OPEN_S, self.finish)

    def finish(self, reset: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if reset:
            for side in (self.client, self.server):
                try:
                    side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        if self.timer is not None:
            self.timer.cancel()
        self.relay.forget(self)
        if self.end is not None:
            self.end.close()


class KernelRelay:
    """The pairs of one event loop on one set of maps."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maps: Maps) -> None:
        self.loop, self.maps = loop, maps
        self.pairs: set[Pair] = set()
        self._count = ctypes.create_string_buffer(8)
        self._sides: dict[int, tuple[Pair, _Side]] = {}  # cookie → its pair and side
        self._quiet: select.epoll | None = None  # the quiet sides (made on the loop, at first use)
        self._quiet_fds: dict[int, tuple[Pair, _Side]] = {}

    def redirected(self, cookie: int) -> int:
        _elem(self.maps.counts_fd, _BPF_MAP_LOOKUP, cookie, self._count)
        return struct.unpack("Q", self._count.raw)[0] & (TOLD - 1)

    # --- watching the sides: quiet (their end only) while the kernel carries them, else for input

    def _quiet_set(self) -> select.epoll | None:
        signals = self.maps.signals()
        if signals is None:
            return None
        if self._quiet is None:
            self._quiet = select.epoll()
            self.loop.add_reader(self._quiet.fileno(), self._quiet_event)
            self.loop.add_reader(signals.fd, self._signal_event)
        return self._quiet

    def _own(self, pair: Pair) -> None:
        for side in (pair.client, pair.server):
            self._sides[side.cookie] = (pair, side)
            _OWNERS[side.cookie] = self

    def watch(self, pair: Pair, side: _Side, quiet: bool = True) -> None:
        """Watch `side`: for its end only (`quiet`, where the ring can tell us of its bytes), or
        for input."""
        fd = side.sock.fileno()
        epoll = self._quiet_set() if quiet else None
        if epoll is None:
            self.loop.add_reader(fd, pair.readable, side)
            return
        epoll.register(fd, select.EPOLLRDHUP)  # (errors and hang-ups are always reported)
        self._quiet_fds[fd] = (pair, side)
        side.quiet = True
        if _has_input(side.sock):  # passed before the pair started (a server that speaks first)
            self.loud(pair, side)

    def unwatch(self, side: _Side) -> None:
        fd = side.sock.fileno()
        if side.quiet:
            side.quiet = False
            self._quiet_fds.pop(fd, None)
            if self._quiet is not None:
                self._quiet.unregister(fd)
        else:
            self.loop.remove_reader(fd)

    def loud(self, pair: Pair, side: _Side) -> None:
        """Its bytes come to user space now (or its end, or an error): watched for input, and
        read at once."""
        if not side.quiet or pair.done:
            return
        self.unwatch(side)
        self.watch(pair, side, quiet=False)
        pair.readable(side)

    def _quiet_event(self) -> None:
        for fd, _ in self._quiet.poll(0):  # type: ignore[union-attr]
            found = self._quiet_fds.get(fd)
            if found is not None:
                self.loud(*found)

    def _signal_event(self) -> None:
        signals = self.maps.signals()
        for cookie in signals.read() if signals is not None else ():
            owner = _OWNERS.get(cookie)
            if owner is self:
                self._told(cookie)
            elif owner is not None:  # (another event loop of this process: its own thread)
                owner.loop.call_soon_threadsafe(owner._told, cookie)

    def _told(self, cookie: int) -> None:
        found = self._sides.get(cookie)
        if found is None:
            return
        pair, side = found
        if side is pair.client:  # the direct path left (the program tells at each send until
            self.undirect(pair)  # its flow is out of `direct`), or the budget of the usual way
        self.loud(pair, side)

    def moved(self, side: _Side) -> int:
        """Bytes the stream verdict moved from `side` (0: it has no count: not started, or the
        direct path closed that way when it left)."""
        try:
            return self.redirected(side.cookie)
        except OSError:
            return 0

    def add(self, end: End, client_fd: int, server_fd: int, first: bytes) -> bool:
        """Relay `client_fd` ⇄ `server_fd` in the kernel; `first` (the ClientHello) goes to the
        server once the pair is in the map.  The descriptors become this relay's (closed at the
        end, then `end.close()`).  False: the pair could not be added (e.g. the map is full);
        nothing was sent and the descriptors are untouched: the caller relays as before."""
        pair = self.stage(client_fd, server_fd)
        return pair is not None and self.start(pair, end, first)

    def stage(self, client_fd: int, server_fd: int, ends: tuple | None = None) -> Pair | None:
        """The first half of `add`, done while the decision is still to be made: the server's
        socket goes into the map (keyed by the client's cookie; the client's socket is not in
        the map yet, so nothing of the client's is redirected).  Then `start` (passed through)
        or `abandon` (not).  `ends`: the client's (peer, original destination), where the caller
        knows them (the student's flow, without asking the socket again)."""
        # (type and protocol given: not asked of each socket again, on every connection's way)
        client = socket.socket(type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, fileno=client_fd)
        server = socket.socket(type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, fileno=server_fd)
        pair: Pair | None = None
        try:
            pair = Pair(self, client, server)
            for side in (pair.client, pair.server):
                side.written_at_start = _written(side.sock)
            # The server's socket enters the map; what it receives before `start` (a server
            # that speaks first) has no count, so the program leaves it to user space.
            _elem(self.maps.counts_fd, _BPF_MAP_UPDATE, pair.client.cookie, 0)
            _elem(self.maps.pairs_fd, _BPF_MAP_UPDATE, pair.client.cookie, server.fileno())
        except OSError as exc:
            log.warning("kalkan: kernel relay: the pair cannot be added (%s); relaying in user space", exc)
            if pair is not None:
                self._unmap(pair)
            client.detach()
            server.detach()
            return None
        self._stage_direct(pair, ends)
        return pair

    def _stage_direct(self, pair: Pair, ends: tuple | None) -> None:
        """The student's flow, for `start` to open (the message program sends its bytes out of
        `pairs[the client's cookie]`, the server's socket, already in the map)."""
        if self.maps.direct is None:
            return
        try:
            sock = pair.client.sock
            pair.flow = flow_key(*ends, netns_cookie(sock)) if ends else student_flow(sock)
        except OSError as exc:
            log.debug("kalkan: kernel relay: no direct path for this pair (%s)", exc)

    def _open_direct(self, pair: Pair) -> None:
        """From now on the student's sends go straight into the server's socket (the direct path,
        see the top); where that cannot be, they keep the stream verdict's way."""
        if pair.flow is None or self.maps.direct is None:
            return
        try:
            _flow_elem(self.maps.direct.direct_fd, _BPF_MAP_UPDATE, pair.flow,
                       struct.pack("QQ", 0, pair.client.cookie))
        except OSError as exc:
            log.debug("kalkan: kernel relay: no direct path for this pair (%s)", exc)
            self.undirect(pair)

    def abandon(self, pair: Pair) -> None:
        """Undo `stage`: the descriptors are the caller's again, untouched."""
        self.undirect(pair)
        self._unmap(pair)
        pair.client.sock.detach()
        pair.server.sock.detach()

    def start(self, pair: Pair, end: End, first: bytes) -> bool:
        """The client's socket into the map (from now on its bytes go to the server), then
        `first`.  False as for `add` (the pair is abandoned)."""
        c, s = pair.client, pair.server
        try:
            _elem(self.maps.pairs_fd, _BPF_MAP_UPDATE, s.cookie, c.sock.fileno())
            _elem(self.maps.counts_fd, _BPF_MAP_UPDATE, s.cookie, 0)
        except OSError as exc:
            log.warning("kalkan: kernel relay: the pair cannot be added (%s); relaying in user space", exc)
            self.abandon(pair)
            return False
        pair.end = end
        self.pairs.add(pair)
        # Before the hello leaves, never after: once the server has answered, the client's next
        # bytes (its Finished, its request) must all take one way.  Until the server answers, the
        # client sends nothing but TLS early data, which is already waiting here (read below).
        self._open_direct(pair)
        client, server = c.sock, s.sock  # (non-blocking: both come from asyncio)
        try:
            early = client.recv(65536, socket.MSG_DONTWAIT)  # bytes that came before the pair was in the map
        except OSError:  # (none waiting: BlockingIOError)
            early = b""
        first += early
        s.sent_by_hand = len(first)
        try:
            sent = server.send(first, socket.MSG_DONTWAIT) if first else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = -1
        # only an end, an error or bytes the program passed wake these (after the send: not on
        # the way of the first bytes)
        self._own(pair)
        for side in (c, s):
            self.watch(pair, side)
        if sent < 0:
            pair.finish(reset=True)
            return True
        if sent < len(first):  # a full send buffer (rare for a ClientHello): the rest when it can
            s.pending += first[sent:]
            pair._send_pending(c, s, _POLL_S)
        return True

    def sent_direct(self, pair: Pair) -> int | None:
        """Bytes the student sent by the direct path (None: it is not on it)."""
        if pair.flow is None or self.maps.direct is None:
            return None
        value = ctypes.create_string_buffer(16)
        try:
            _flow_elem(self.maps.direct.direct_fd, _BPF_MAP_LOOKUP, pair.flow, value)
        except OSError:
            return None
        return struct.unpack_from("Q", value.raw)[0]

    def undirect(self, pair: Pair) -> None:
        flow, pair.flow = pair.flow, None
        if flow is None or self.maps.direct is None:
            return
        try:  # (before the pair leaves `pairs`: the program never finds a flow without its target)
            _flow_elem(self.maps.direct.direct_fd, _BPF_MAP_DELETE, flow)
        except OSError:
            pass

    def forget(self, pair: Pair) -> None:
        self.pairs.discard(pair)
        self.undirect(pair)
        for side in (pair.client, pair.server):
            self._sides.pop(side.cookie, None)
            if _OWNERS.get(side.cookie) is self:
                del _OWNERS[side.cookie]
            try:
                if not side.eof:
                    self.unwatch(side)
                if side.pending:
                    self.loop.remove_writer(side.sock.fileno())
            except (ValueError, OSError):
                pass
        self._unmap(pair, counts_only=True)
        pair.client.sock.close()  # closing takes each socket out of `pairs` (the kernel unlinks it)
        pair.server.sock.close()

    def _unmap(self, pair: Pair, counts_only: bool = False) -> None:
        maps = (self.maps.counts_fd,) if counts_only else (self.maps.pairs_fd, self.maps.counts_fd)
        for side in (pair.client, pair.server):
            for fd in maps:
                try:
                    _elem(fd, _BPF_MAP_DELETE, side.cookie)
                except OSError:
                    pass  # not there




# --- which maps this process uses ---------------------------------------------------------------

_RELAYS: dict[int, KernelRelay] = {}
_OWNERS: dict[int, KernelRelay] = {}  # a live pair's socket cookie → its relay (the ring's reader)
_MAPS: Maps | None = None
_WHY_NOT: str | None = None


def configure(option: str) -> None:
    """`option`: "H,C" (descriptors given by the agent), "auto" (create them if this process
    may), or "off"."""
    global _MAPS, _WHY_NOT
    _RELAYS.clear()
    _MAPS, _WHY_NOT = None, None
    if option == "off":
        _WHY_NOT = "switched off (kalkan_kernel_relay=off)"
        return
    try:
        if option in ("", "auto"):
            _MAPS = create_maps()
        else:
            _MAPS = Maps.from_option(option)
            cleared = _MAPS.clear_leftovers()
            if cleared:
                log.info("kalkan: kernel relay: %s entries left by an earlier proxy cleared", cleared)
    except (OSError, ValueError) as exc:
        _WHY_NOT = f"no BPF sockhash here ({exc})"
        log.info("kalkan: the kernel relay is not available: %s; relaying in user space", _WHY_NOT)


def available() -> bool:
    return _MAPS is not None


def watch_port(port: int) -> None:
    """The student's sockets connecting to `port` may take the direct path (see the top)."""
    if _MAPS is None or _MAPS.direct is None:
        return
    try:
        _MAPS.direct.watch(port)
    except OSError as exc:
        log.info("kalkan: kernel relay: port %s not watched for the direct path (%s)", port, exc)


def why_not() -> str | None:
    return _WHY_NOT


def relay_for(loop: asyncio.AbstractEventLoop) -> KernelRelay | None:
    if _MAPS is None:
        return None
    relay = _RELAYS.get(id(loop))
    if relay is None:
        relay = _RELAYS[id(loop)] = KernelRelay(loop, _MAPS)
    return relay


def add(end: Any, client_fd: int, server_fd: int, first: bytes) -> bool:
    relay = relay_for(asyncio.get_running_loop())
    return relay is not None and relay.add(end, client_fd, server_fd, first)


def stage(client_fd: int, server_fd: int, ends: tuple | None = None) -> Pair | None:
    relay = relay_for(asyncio.get_running_loop())
    return relay.stage(client_fd, server_fd, ends) if relay is not None else None


def start(pair: Pair, end: Any, first: bytes) -> bool:
    return pair.relay.start(pair, end, first)


def abandon(pair: Pair) -> None:
    pair.relay.abandon(pair)
