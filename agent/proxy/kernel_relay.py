"""The kernel relay: after a pass-through decision, the bytes never come back to user space.

Why: a passed-through connection still cost a Python round per chunk each way (asyncio, or the
splice pump's epoll loop), ~40–70 µs per request/response on this machine, which kept the
pass-through slower than E2Guardian's tunnel (benchmarks/proxy/RESULTS.md).  Linux can relay
between two TCP sockets itself: a BPF "sockhash" map holding both sockets, with a stream-verdict
program attached (`BPF_PROG_TYPE_SK_SKB`) that sends every arriving segment out of the paired
socket (`bpf_sk_redirect_hash`).  The proxy decides, dials, puts the pair in the map, and from
then on only hears of the connection's end.

The program (hand-assembled in agent/proxy/kernel_maps.py, with the maps; no compiler, no libbpf):

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

Quiet sockets. After each segment it redirects, the kernel still wakes whoever polls the receiving
socket for input, although nothing is left to read; a relay polling its sockets for input woke
once per answer, on the CPU the student's program was about to run on. So a socket the kernel
carries is watched for its end only (`EPOLLRDHUP`, in an epoll set of the relay's own), and the
programs tell the relay through a ring buffer when a socket's bytes start coming to user space
(its budget spent, the direct path left: `kernel_maps.TOLD`); from then on it is read as before.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import errno
import fcntl
import logging
import select
import socket
import struct
from typing import Any, Protocol

from agent.proxy.kernel_maps import (
    KERNEL_BUDGET,
    MAP_DELETE,
    MAP_LOOKUP,
    MAP_UPDATE,
    TOLD,
    Maps,
    create_maps,
    elem,
    flow_elem,
    flow_key,
    netns_cookie,
    student_flow,
)

log = logging.getLogger("kalkan.proxy.kernel_relay")

_SO_COOKIE = 57
_TIOCOUTQ = 0x5411
_TCP_INFO_LEN = 232
_TCPI_BYTES_ACKED = 120  # offset of tcpi_bytes_acked in struct tcp_info

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
        elem(self.maps.counts_fd, MAP_LOOKUP, cookie, self._count)
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
            elem(self.maps.counts_fd, MAP_UPDATE, pair.client.cookie, 0)
            elem(self.maps.pairs_fd, MAP_UPDATE, pair.client.cookie, server.fileno())
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
            flow_elem(self.maps.direct.direct_fd, MAP_UPDATE, pair.flow,
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
            elem(self.maps.pairs_fd, MAP_UPDATE, s.cookie, c.sock.fileno())
            elem(self.maps.counts_fd, MAP_UPDATE, s.cookie, 0)
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
        if s.quiet and _has_input(server):  # passed before its count was there (a server that
            self.loud(pair, s)              # speaks first; the client's early bytes were read above)
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
            flow_elem(self.maps.direct.direct_fd, MAP_LOOKUP, pair.flow, value)
        except OSError:
            return None
        return struct.unpack_from("Q", value.raw)[0]

    def undirect(self, pair: Pair) -> None:
        flow, pair.flow = pair.flow, None
        if flow is None or self.maps.direct is None:
            return
        try:  # (before the pair leaves `pairs`: the program never finds a flow without its target)
            flow_elem(self.maps.direct.direct_fd, MAP_DELETE, flow)
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
                    elem(fd, MAP_DELETE, side.cookie)
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
