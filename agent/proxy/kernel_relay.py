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
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import platform
import socket
import struct
import threading
from typing import Any, Protocol

log = logging.getLogger("kalkan.proxy.kernel_relay")

# --- the bpf(2) system call ------------------------------------------------------------------

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "i686": 357}.get(platform.machine())
_BPF_MAP_CREATE, _BPF_MAP_LOOKUP, _BPF_MAP_UPDATE, _BPF_MAP_DELETE = 0, 1, 2, 3
_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8
_MAP_HASH, _MAP_SOCKHASH = 1, 18
_PROG_SK_SKB = 14
_ATTACH_STREAM_VERDICT = 5
_HELPER_LOOKUP, _HELPER_SOCKET_COOKIE, _HELPER_REDIRECT_HASH = 1, 46, 72
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


# --- the program -----------------------------------------------------------------------------

def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _load_map(dst: int, map_fd: int) -> bytes:  # 64-bit immediate, src 1 = "this is a map fd"
    return _insn(0x18, dst, 1, 0, map_fd) + _insn(0)


def program(pairs_fd: int, counts_fd: int) -> bytes:
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
        _insn(0x61, 1, 6, 0),                       # r1 = skb->len
        _insn(0xDB, 0, 1, 0, 0),                    # atomic *r0 += r1
        _insn(0xBF, 1, 6),
        _load_map(2, pairs_fd),
        _insn(0xBF, 3, 10), _insn(0x07, 3, imm=-8),
        _insn(0xB7, 4, imm=0),                      # flags 0: out of the peer socket
        _insn(0x85, imm=_HELPER_REDIRECT_HASH),
        _insn(0x95),                                # return its verdict
    ])


class Maps:
    """The two maps (descriptors): `pairs` (sockhash, cookie → the peer socket) and `counts`
    (hash, cookie → bytes redirected from that socket)."""

    def __init__(self, pairs_fd: int, counts_fd: int) -> None:
        self.pairs_fd, self.counts_fd = pairs_fd, counts_fd

    def option(self) -> str:
        return f"{self.pairs_fd},{self.counts_fd}"

    @classmethod
    def from_option(cls, text: str) -> Maps:
        pairs, _, counts = text.partition(",")
        return cls(int(pairs), int(counts))


PAIRS_NAME, COUNTS_NAME = b"kalkan_pairs", b"kalkan_counts"  # as `bpftool map` lists them


def _map_attr(kind: int, name: bytes) -> bytes:
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name
    return struct.pack("IIIIIII16s", kind, 8, 8, 2 * MAX_PAIRS, 0, 0, 0, name)


def create_maps() -> Maps:
    """Maps with the program attached (needs CAP_BPF and CAP_NET_ADMIN).  OSError says why not."""
    pairs = _bpf(_BPF_MAP_CREATE, _map_attr(_MAP_SOCKHASH, PAIRS_NAME))
    counts = prog = -1
    try:
        counts = _bpf(_BPF_MAP_CREATE, _map_attr(_MAP_HASH, COUNTS_NAME))
        code = program(pairs, counts)
        insns = ctypes.create_string_buffer(code, len(code))
        licence = ctypes.create_string_buffer(b"GPL")  # the helpers used need a GPL program
        prog = _bpf(_BPF_PROG_LOAD, struct.pack(
            "IIQQIIQII16s", _PROG_SK_SKB, len(code) // 8, ctypes.addressof(insns),
            ctypes.addressof(licence), 0, 0, 0, 0, 0, b"kalkan_relay"))
        _bpf(_BPF_PROG_ATTACH, struct.pack("IIII", pairs, prog, _ATTACH_STREAM_VERDICT, 0))
    except OSError:
        for fd in (pairs, counts):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        if prog >= 0:
            os.close(prog)  # the map holds the program now
    return Maps(pairs, counts)


# --- one relayed pair --------------------------------------------------------------------------

class End(Protocol):
    def close(self) -> None: ...


def _cookie(sock: socket.socket) -> int:
    return struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, _SO_COOKIE, 8))[0]


def _written(sock: socket.socket) -> int:
    """Bytes ever put into this socket's send queue (acked + still queued).  An active open
    counts its SYN too; only differences of this value are used."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    queued = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), _TIOCOUTQ, queued)
    return struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0] + queued[0]


FLUSH_WAIT_S = 10.0  # a peer that does not take the last bytes this long: its half is shut anyway
HALF_OPEN_S = 120.0  # one side closed: the other gets this long to finish
_POLL_S = 0.001


class _Side:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cookie = _cookie(sock)
        self.written_at_start = 0
        self.sent_by_hand = 0  # bytes this relay wrote to the socket itself (the ClientHello)
        self.eof = False  # its peer said it will send no more
        self.shut = False  # its write half is shut (its peer's EOF passed on)


class Pair:
    def __init__(self, relay: KernelRelay, client: socket.socket, server: socket.socket) -> None:
        self.relay = relay
        self.end: End | None = None  # set by `KernelRelay.start`
        self.client, self.server = _Side(client), _Side(server)
        self.done = False
        self.timer: asyncio.TimerHandle | None = None

    def peer(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    def readable(self, side: _Side) -> None:
        """Only an EOF, an error or bytes that came before the pair was in the map wake us."""
        try:
            data = side.sock.recv(65536)
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
        if data:  # from before the pair was complete (no count: the program passed it): by hand
            peer = self.peer(side)
            peer.sent_by_hand += len(data)
            try:
                sent = peer.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.finish(reset=True)
                return
            if sent < len(data):  # a full socket: the rest in a task (rare: a few bytes at most)
                self.relay.send_later(self, peer, data[sent:])
            return
        side.eof = True
        self.relay.loop.remove_reader(side.sock.fileno())
        self._flush_then_shut(self.peer(side), side, self.relay.loop.time() + FLUSH_WAIT_S)

    def _flush_then_shut(self, target: _Side, source: _Side, deadline: float) -> None:
        """Shut `target` for writing once every byte from `source` has reached it."""
        if self.done:
            return
        try:
            expected = self.relay.redirected(source.cookie) + target.sent_by_hand
            arrived = _written(target.sock) - target.written_at_start
        except OSError:
            arrived, expected = 0, 0
        if arrived < expected and self.relay.loop.time() < deadline:
            self.relay.loop.call_later(_POLL_S, self._flush_then_shut, target, source, deadline)
            return
        try:
            target.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        target.shut = True
        if self.client.shut and self.server.shut:
            self.finish()
        elif self.timer is None:
            self.timer = self.relay.loop.call_later(HALF_OPEN_S, self.finish)

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
        self._tasks: set[asyncio.Task] = set()

    def redirected(self, cookie: int) -> int:
        _elem(self.maps.counts_fd, _BPF_MAP_LOOKUP, cookie, self._count)
        return struct.unpack("Q", self._count.raw)[0]

    def add(self, end: End, client_fd: int, server_fd: int, first: bytes) -> bool:
        """Relay `client_fd` ⇄ `server_fd` in the kernel; `first` (the ClientHello) goes to the
        server once the pair is in the map.  The descriptors become this relay's (closed at the
        end, then `end.close()`).  False: the pair could not be added (e.g. the map is full);
        nothing was sent and the descriptors are untouched: the caller relays as before."""
        pair = self.stage(client_fd, server_fd)
        return pair is not None and self.start(pair, end, first)

    def stage(self, client_fd: int, server_fd: int) -> Pair | None:
        """The first half of `add`, done while the decision is still to be made: the server's
        socket goes into the map (keyed by the client's cookie; the client's socket is not in
        the map yet, so nothing of the client's is redirected).  Then `start` (passed through)
        or `abandon` (not)."""
        client = socket.socket(fileno=client_fd)
        server = socket.socket(fileno=server_fd)
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
        return pair

    def abandon(self, pair: Pair) -> None:
        """Undo `stage`: the descriptors are the caller's again, untouched."""
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
        # only an end, an error or bytes from before the map wake these (after the send: not
        # on the way of the first bytes)
        self.loop.add_reader(client.fileno(), pair.readable, c)
        self.loop.add_reader(server.fileno(), pair.readable, s)
        if sent < 0:
            pair.finish(reset=True)
            return True
        if sent < len(first):  # a full send buffer (rare for a ClientHello): the rest in a task
            self.send_later(pair, s, first[sent:])
        return True

    def send_later(self, pair: Pair, side: _Side, rest: bytes) -> None:
        task = self.loop.create_task(self._send_rest(pair, side, rest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_rest(self, pair: Pair, side: _Side, rest: bytes) -> None:
        try:
            await self.loop.sock_sendall(side.sock, rest)
        except OSError:
            pair.finish(reset=True)

    def forget(self, pair: Pair) -> None:
        self.pairs.discard(pair)
        for side in (pair.client, pair.server):
            if not side.eof:
                try:
                    self.loop.remove_reader(side.sock.fileno())
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
        _MAPS = Maps.from_option(option) if option not in ("", "auto") else create_maps()
    except (OSError, ValueError) as exc:
        _WHY_NOT = f"no BPF sockhash here ({exc})"
        log.info("kalkan: the kernel relay is not available: %s; relaying in user space", _WHY_NOT)


def available() -> bool:
    return _MAPS is not None


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


def stage(client_fd: int, server_fd: int) -> Pair | None:
    relay = relay_for(asyncio.get_running_loop())
    return relay.stage(client_fd, server_fd) if relay is not None else None


def start(pair: Pair, end: Any, first: bytes) -> bool:
    return pair.relay.start(pair, end, first)


def abandon(pair: Pair) -> None:
    pair.relay.abandon(pair)
