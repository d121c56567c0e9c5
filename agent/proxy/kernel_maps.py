"""The BPF side of the kernel relay (agent/proxy/kernel_relay.py, which says why and how): the
bpf(2) system call and map-element calls, the three hand-assembled programs (the stream verdict,
the direct path's `sock_ops` and `sk_msg`), the maps and their creation, the flows' keys, and the
ring buffer the programs tell the relay through.  No compiler, no libbpf: the programs are
assembled here, instruction by instruction, each with a comment.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import platform
import socket
import struct
import sys
import threading

log = logging.getLogger("kalkan.proxy.kernel_relay")

# --- the bpf(2) system call ------------------------------------------------------------------

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "i686": 357}.get(platform.machine())
_BPF_MAP_CREATE, MAP_LOOKUP, MAP_UPDATE, MAP_DELETE, _BPF_MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_LINK_CREATE = 5, 8, 28
_MAP_HASH, _MAP_SOCKHASH, _MAP_RINGBUF = 1, 18, 27
_PROG_SOCK_OPS, _PROG_SK_SKB, _PROG_SK_MSG = 13, 14, 16
_ATTACH_CGROUP_SOCK_OPS, _ATTACH_STREAM_VERDICT, _ATTACH_MSG_VERDICT = 3, 5, 7
_HELPER_LOOKUP, _HELPER_DELETE, _HELPER_SOCKET_COOKIE = 1, 3, 46
_HELPER_SOCK_HASH_UPDATE, _HELPER_MSG_REDIRECT_HASH, _HELPER_REDIRECT_HASH = 70, 71, 72
_HELPER_RINGBUF_OUTPUT = 130
_SOCK_OPS_ACTIVE_ESTABLISHED = 4  # a socket of this machine finished its connect()
_SO_ORIGINAL_DST = 80  # (SOL_IP and SOL_IPV6 alike)
_SK_PASS = 1
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


def elem(map_fd: int, cmd: int, cookie: int, value: int | ctypes.Array | None = None,
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


def flow_elem(map_fd: int, cmd: int, key: bytes,
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
_TOLD_BIT = 40
TOLD = 1 << _TOLD_BIT


def _told_in(reg: int) -> list[bytes]:
    """r<reg> = TOLD (a 64-bit constant: two instructions)."""
    return [_insn(0xB7, reg, imm=1), _insn(0x67, reg, imm=_TOLD_BIT)]


def _tell(ring_fd: int, key_at: int, mark: int | None = None) -> list[bytes]:
    """Write the cookie at r10+`key_at` to the ring; then, if the ring took it, mark the count
    that r`mark` points to as told.  Spends r0-r5."""
    tell = [_load_map(1, ring_fd), _insn(0xBF, 2, 10), _insn(0x07, 2, imm=key_at),
            _insn(0xB7, 3, imm=8), _insn(0xB7, 4, imm=0),
            _insn(0x85, imm=_HELPER_RINGBUF_OUTPUT)]
    if mark is None:
        return tell
    return tell + [_insn(0x55, 0, 0, 3, 0),                    # the ring full: at a later segment
                   *_told_in(1),
                   _insn(0xDB, mark, 1, 0, 0)]                 # atomic *r<mark> += TOLD


def program(pairs_fd: int, counts_fd: int, ring_fd: int | None = None) -> bytes:
    """The stream verdict: the pair started and the budget not spent → out of the peer socket;
    the budget spent → to user space (told through the ring, once)."""
    spent = [_insn(0xB7, 0, imm=_SK_PASS), _insn(0x95)]
    if ring_fd is not None:
        tell = _tell(ring_fd, -8, mark=7)
        spent = [_insn(0xBF, 7, 0),                                 # r7 = &count
                 *_told_in(2),
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
        flow_elem(self.ports_fd, MAP_UPDATE, word, struct.pack("I", 1))


def _clear(map_fd: int, key_size: int) -> int:
    """Delete every element of a map; how many there were."""
    key = ctypes.create_string_buffer(key_size)
    cleared = 0
    while True:
        try:  # BPF_MAP_GET_NEXT_KEY without a key: the first one
            _bpf(_BPF_MAP_GET_NEXT_KEY, struct.pack("IIQQ", map_fd, 0, 0, ctypes.addressof(key)))
            _bpf(MAP_DELETE, struct.pack("IIQ", map_fd, 0, ctypes.addressof(key)))
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
