"""The relay after a pass-through decision: the two sockets handed to a `splice` pump thread.

Why: once the ClientHello is decided "pass through", mitmproxy relays every later chunk through
its whole layer machinery (events, the mode and HTTP layers of a CONNECT tunnel, commands, hooks
machinery) — most of what a passed-through page costs (measured: `benchmarks/proxy/
passthrough_page.py`).  Here the client's transport is taken from mitmproxy's connection handler
(`set_protocol`), the server is dialled by this module, and each chunk is one callback that
writes it to the other side, with flow control both ways.  The decision is made before, exactly
as for mitmproxy's own relay; the `server_connect` hooks of every addon still run (Kalkan's
destination check and refusals, a test's upstream mapping), and the handler learns of the end
through its reader's EOF, so `client_disconnected` (ISUO session tracking) runs as before.

Two ways to move the bytes (option `kalkan_relay`):

* `splice` (the default on Linux): both sockets are duplicated out of asyncio and handed to one
  pump thread per process (`_Pump`), which waits on them with its own `epoll` and moves each chunk
  socket → pipe → socket with `os.splice` (the bytes never enter Python; the GIL is released
  during each call).  A chunk costs two system calls and a few lines of Python instead of an
  event-loop round with two protocol callbacks; nothing of mitmproxy runs per chunk.  The end
  (both ways closed, a reset, an error) is posted back to the event loop, which closes
  mitmproxy's side of the client as below.
* `asyncio`: each chunk is one protocol callback writing it to the other side (the first version).

Anything unusual (no live handler, a transport that is not a plain asyncio socket transport,
bytes still queued for the client) returns False from `hand_off` and the caller keeps
mitmproxy's relay.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import select
import socket
import threading
import time
from typing import Any

from mitmproxy import ctx
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.server_hooks import ServerConnectHook, ServerConnectionHookData

log = logging.getLogger("kalkan.proxy.relay")
HIGH_WATER = 256 * 1024


class _Parked(layer.Layer):
    """Stands in mitmproxy's layer stack while the relay owns the sockets: passes nothing."""

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.ConnectionClosed) and event.connection == self.context.client:
            yield commands.CloseConnection(self.context.client)


class _Side(asyncio.Protocol):
    def __init__(self, relay: _Relay, name: str) -> None:
        self.relay, self.name = relay, name
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []
        self.eof_pending = False
        self.got_eof = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.relay.watchdog.register_activity()
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        elif peer is not None:
            peer.pending.append(data)

    def eof_received(self) -> bool:
        self.got_eof = True
        peer = self.peer
        if peer is not None and peer.got_eof:
            self.relay.close()  # both ways done
            return False
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
        elif peer is not None:
            peer.eof_pending = True
        return True  # keep our write side open (half-close)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.relay.lost(self)

    def flush_pending(self) -> None:
        assert self.transport is not None
        for data in self.pending:
            self.transport.write(data)
        self.pending.clear()
        if self.eof_pending and self.transport.can_write_eof():
            self.transport.write_eof()


class _Relay:
    def __init__(self, handler: Any, context: Any, first: bytes) -> None:
        self.handler, self.context = handler, context
        self.watchdog = handler.timeout_watchdog
        io = handler.transports[handler.client]
        self.reader: asyncio.StreamReader = io.reader
        self.client = _Side(self, "client")
        self.server = _Side(self, "server")
        self.client.peer, self.server.peer = self.server, self.client
        self.server.pending.append(first)
        self.done = False

    def take_client(self, transport: asyncio.Transport) -> None:
        # bytes the handler's reader holds but has not handed on yet come after `first`
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            self.server.pending.append(bytes(buffered))
            buffered.clear()
        self.client.transport = transport
        transport.set_protocol(self.client)
        if not transport.is_reading():
            transport.resume_reading()

    async def run(self) -> None:
        try:
            data = ServerConnectionHookData(server=self.context.server, client=self.context.client)
            await ctx.master.addons.handle_lifecycle(ServerConnectHook(data))
            if self.done:
                return
            if data.server.error or not data.server.address:
                self.close()
                return
            host, port = data.server.address[0], data.server.address[1]
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: self.server, host, port)
            if self.done:
                transport.close()
                return
            self.server.flush_pending()
        except Exception as exc:  # the origin is down, a hook failed: the client sees a closed connection
            log.debug("kalkan relay to %s failed: %s", self.context.server.address, exc)
            self.close()

    def lost(self, side: _Side) -> None:
        self.close()

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        for side in (self.client, self.server):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()
        # mitmproxy's handler still waits on its reader: end it, so the client's disconnect is
        # seen (`client_disconnected`) and the handler's task finishes.  The connection is
        # closed both ways (else the handler would keep a half-closed client open for writing).
        self.context.client.state = ConnectionState.CLOSED
        if not self.reader.at_eof():
            self.reader.feed_eof()


# --------------------------------------------------------------------------- the splice pump

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_BAD = select.EPOLLHUP | select.EPOLLERR
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
CHUNK = 1 << 16  # a pipe holds 64 KiB by default


class _Pair:
    """One relayed connection in the pump: fds[0] the client, fds[1] the server.  Direction d
    moves bytes from fds[d] through pipe d to fds[1 - d]."""

    __slots__ = ("fds", "pipes", "held", "eof", "gone", "masks", "on_done", "watchdog", "closed")

    def __init__(self, client_fd: int, server_fd: int, on_done, watchdog) -> None:
        self.fds = (client_fd, server_fd)
        self.pipes = (os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC), os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        self.held = [0, 0]  # bytes waiting in pipe d
        self.eof = [False, False]  # fds[d] has ended its sending
        self.gone = [False, False]  # fds[d] hung up while its bytes still wait in pipe d
        self.masks = [0, 0]
        self.on_done, self.watchdog = on_done, watchdog
        self.closed = False

    def wanted(self, i: int) -> int:
        mask = 0
        if not self.eof[i] and not self.held[i]:
            mask |= _IN
        if self.held[1 - i]:
            mask |= _OUT
        return mask


class _Pump(threading.Thread):
    """The one thread per proxy process that moves passed-through bytes with `splice`."""

    def __init__(self) -> None:
        super().__init__(name="kalkan-splice-relay", daemon=True)
        self.ep = select.epoll()
        self.where: dict[int, tuple[_Pair, int]] = {}  # fd → (pair, index); only this thread
        self.incoming: collections.deque[_Pair] = collections.deque()
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep.register(self.wake, _IN)

    def add(self, pair: _Pair) -> None:
        """Hand a pair to the pump (any thread).  The pump registers it itself, between two
        batches of events: an event still queued for a number that a just-closed pair used
        must never reach the new pair that reuses the number."""
        self.incoming.append(pair)
        os.eventfd_write(self.wake, 1)

    def _register(self) -> None:
        try:
            os.eventfd_read(self.wake)
        except BlockingIOError:
            pass
        while self.incoming:
            pair = self.incoming.popleft()
            for i, fd in enumerate(pair.fds):
                self.where[fd] = (pair, i)
                pair.masks[i] = pair.wanted(i)
                self.ep.register(fd, pair.masks[i])

    def run(self) -> None:  # pragma: no cover - exercised through the proxy tests
        poll, where, wake = self.ep.poll, self.where, self.wake
        while True:
            try:
                ready = poll()
            except InterruptedError:
                continue
            now = time.time()
            woken = False
            for fd, ev in ready:
                if fd == wake:
                    woken = True
                    continue
                found = where.get(fd)
                if found is None:
                    continue
                pair, i = found
                if pair.closed:
                    continue
                try:
                    self._event(pair, i, ev)
                except OSError:  # a reset, a broken pipe: the connection is over both ways
                    self._close(pair)
                    continue
                if not pair.closed:
                    pair.watchdog.last_activity = now  # mitmproxy's idle timeout sees the traffic
                    self._rearm(pair)
            if woken:
                self._register()

    def _event(self, pair: _Pair, i: int, ev: int) -> None:
        if ev & (_IN | _BAD) and not pair.eof[i] and not pair.held[i]:
            self._pull(pair, i)
        if ev & (_OUT | _BAD) and pair.held[1 - i]:
            self._push(pair, 1 - i)
        if ev & select.EPOLLERR:
            raise ConnectionResetError
        if ev & select.EPOLLHUP and pair.eof[i]:
            if pair.held[i]:  # its last bytes still wait for the other side: stop watching it
                pair.gone[i] = True
            else:
                self._close(pair)
        if not pair.closed and pair.eof[0] and pair.eof[1] and not pair.held[0] and not pair.held[1]:
            self._close(pair)

    def _pull(self, pair: _Pair, d: int) -> None:
        try:
            n = os.splice(pair.fds[d], pair.pipes[d][1], CHUNK, flags=_FLAGS)
        except BlockingIOError:
            return
        if n == 0:  # fds[d] is done sending: half-close towards the other side
            pair.eof[d] = True
            socket_shutdown(pair.fds[1 - d])
            return
        pair.held[d] = n
        self._push(pair, d)

    def _push(self, pair: _Pair, d: int) -> None:
        while pair.held[d]:
            try:
                n = os.splice(pair.pipes[d][0], pair.fds[1 - d], pair.held[d], flags=_FLAGS)
            except BlockingIOError:
                return
            pair.held[d] -= n
        if pair.gone[d]:
            self._close(pair)

    def _rearm(self, pair: _Pair) -> None:
        for i, fd in enumerate(pair.fds):
            if pair.gone[i]:
                if pair.masks[i] is not None:
                    self.ep.unregister(fd)
                    pair.masks[i] = None  # type: ignore[call-overload]
                continue
            mask = pair.wanted(i)
            if mask != pair.masks[i]:
                self.ep.modify(fd, mask)
                pair.masks[i] = mask

    def _close(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        for i, fd in enumerate(pair.fds):
            self.where.pop(fd, None)
            if pair.masks[i] is not None:
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass
            os.close(fd)
        for r, w in pair.pipes:
            os.close(r)
            os.close(w)
        pair.on_done()


def socket_shutdown(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.detach()


_PUMP: _Pump | None = None
_PUMP_LOCK = threading.Lock()


def _pump() -> _Pump:
    global _PUMP
    with _PUMP_LOCK:
        if _PUMP is None or not _PUMP.is_alive():
            _PUMP = _Pump()
            _PUMP.start()
        return _PUMP


SPLICE_AVAILABLE = hasattr(os, "splice") and hasattr(select, "epoll") and hasattr(os, "eventfd")


class _SpliceRelay(_Relay):
    """Dial as `_Relay` does, then give both sockets to the pump."""

    def take_client(self, transport: asyncio.Transport) -> None:
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            self.server.pending.append(bytes(buffered))
            buffered.clear()
        transport.pause_reading()  # asyncio no longer reads the client: the pump does
        self.client_transport = transport
        self.client_fd = os.dup(transport.get_extra_info("socket").fileno())

    async def run(self) -> None:
        server: socket.socket | None = None
        try:
            data = ServerConnectionHookData(server=self.context.server, client=self.context.client)
            await ctx.master.addons.handle_lifecycle(ServerConnectHook(data))
            if self.done or data.server.error or not data.server.address:
                self.close()
                return
            host, port = data.server.address[0], data.server.address[1]
            loop = asyncio.get_running_loop()
            infos = _literal(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            error: Exception = OSError(f"no address for {host}")
            for family, kind, proto, _, address in infos:
                server = socket.socket(family, kind, proto)
                server.setblocking(False)
                try:
                    await loop.sock_connect(server, address)
                    break
                except OSError as exc:
                    error = exc
                    server.close()
                    server = None
            if server is None:
                raise error
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = b"".join(self.server.pending)
            self.server.pending.clear()
            if first:
                await loop.sock_sendall(server, first)
            if self.done:
                server.close()
                return
            pair = _Pair(self.client_fd, server.detach(), self._pumped, self.watchdog)
            self.client_fd = -1
            server = None
            _pump().add(pair)
        except Exception as exc:  # the origin is down, a hook failed: the client sees a closed connection
            log.debug("kalkan relay to %s failed: %s", self.context.server.address, exc)
            if server is not None:
                server.close()
            self.close()

    def _pumped(self) -> None:  # in the pump thread: the pair's sockets are closed
        self.loop.call_soon_threadsafe(self.close)

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        if self.client_fd >= 0:
            os.close(self.client_fd)
            self.client_fd = -1
        self.client_transport.close()
        self.context.client.state = ConnectionState.CLOSED
        if not self.reader.at_eof():
            self.reader.feed_eof()


def _literal(host: str, port: int) -> list | None:
    """An address needs no resolver (asyncio's getaddrinfo is a round through a thread pool)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
    return None


def hand_off(nextlayer: layer.NextLayer, first: bytes, mode: str = "splice") -> bool:
    """Pass the connection of `nextlayer` through with the cheap relay; False: not possible here
    (the caller then sets mitmproxy's own TCP relay).  `mode`: "splice" or "asyncio"."""
    context = nextlayer.context
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(context.client.id) if proxyserver else None
    if handler is None:
        return False
    io = handler.transports.get(handler.client)
    writer = getattr(io, "writer", None)
    transport = getattr(writer, "transport", None)
    if not isinstance(getattr(io, "reader", None), asyncio.StreamReader) or not isinstance(
            transport, asyncio.Transport) or not hasattr(transport, "set_protocol"):
        return False
    if mode == "splice" and SPLICE_AVAILABLE and transport.get_write_buffer_size() == 0 \
            and transport.get_extra_info("socket") is not None:
        relay: _Relay = _SpliceRelay(handler, context, first)
        relay.loop = asyncio.get_running_loop()  # type: ignore[attr-defined]
    else:
        relay = _Relay(handler, context, first)
    relay.take_client(transport)
    nextlayer.layer = _Parked(context)
    task = asyncio.get_running_loop().create_task(relay.run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return True


_TASKS: set[asyncio.Task] = set()
