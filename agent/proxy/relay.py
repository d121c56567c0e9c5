"""The relay after a pass-through decision: the two sockets handed to a `splice` pump.

Why: once the ClientHello is decided "pass through", mitmproxy relays every later chunk through
its whole layer machinery (events, the mode and HTTP layers of a CONNECT tunnel, commands, hooks
machinery).  Here the decision is made before, exactly as for mitmproxy's own relay; the
`server_connect` hooks of every addon still run (Kalkan's destination check and refusals, a
test's upstream mapping), the server is dialled by this module, and the handler learns of the end
through its reader's EOF, so `client_disconnected` (ISUO session tracking) runs as before.

Three ways to move the bytes (option `kalkan_relay_mode`):

* `process` (the default): both sockets are duplicated out of asyncio and sent (SCM_RIGHTS) to
  a small pump process (`splicepump.py`, standard library only) that moves each chunk
  socket → pipe → socket with `os.splice` in one `epoll` loop; it tells each pair's end back by
  id.  No interpreter lock is shared with mitmproxy's event loop.  If the process cannot be
  started, `splice` is used (and the start retried after a minute).
* `splice`: the same pump as a thread of this process (`splicepump.thread_pump`).
* `asyncio`: the client's transport is taken from mitmproxy's handler (`set_protocol`) and each
  chunk is one protocol callback writing it to the other side (the first version).

Anything unusual (no live handler, a transport that is not a plain asyncio socket transport,
bytes still queued for the client) returns False from `hand_off` and the caller keeps
mitmproxy's relay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mitmproxy import ctx
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.server_hooks import ServerConnectHook, ServerConnectionHookData

from agent.proxy import kernel_relay, splicepump

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


class _PumpProcess:
    """The splice pump in its own process (`splicepump.py`, standard library only): no Python
    lock shared with mitmproxy's event loop, so a busy or descheduled proxy thread never
    holds a chunk up.  Pairs go over a Unix socket with their two sockets; the pump tells each
    one's end back by id.  Started on first use, again if it died."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        script = str(Path(splicepump.__file__))
        try:
            for python in PYTHONS:  # the pump needs only the standard library (3.10+)
                try:
                    self.proc = subprocess.Popen([python, "-I", script, str(theirs.fileno())],
                                                 pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
                    break
                except OSError as exc:  # e.g. an interpreter this account may not run
                    error = exc
            else:
                ours.close()
                raise error
        finally:
            theirs.close()
        self.control = ours
        self.next_id = 0
        self.waiting: dict[int, _SpliceRelay] = {}
        loop.add_reader(ours.fileno(), self._told)

    def alive(self) -> bool:
        return self.control is not None and self.proc.poll() is None

    def add(self, relay: _SpliceRelay, client_fd: int, server_fd: int) -> None:
        self.next_id += 1
        self.waiting[self.next_id] = relay
        try:
            socket.send_fds(self.control, [struct.pack("Q", self.next_id)], [client_fd, server_fd])
        except OSError:
            self.waiting.pop(self.next_id, None)
            raise  # the relay closes the connection
        finally:
            os.close(client_fd)  # the pump holds its own copies now
            os.close(server_fd)

    def _told(self) -> None:
        try:
            message = self.control.recv(8)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if len(message) == 8:
            relay = self.waiting.pop(struct.unpack("Q", message)[0], None)
            if relay is not None:
                relay.close()
            return
        # the pump is gone: its connections are gone with it
        self.loop.remove_reader(self.control.fileno())
        self.control.close()
        self.control = None  # type: ignore[assignment]
        for relay in self.waiting.values():
            relay.close()
        self.waiting.clear()


_PROCESS: _PumpProcess | None = None
_FAILED_AT = -1e9
RETRY_S = 60.0  # after a failed start, the thread relays for this long before the next try
PYTHONS = (sys.executable, "/usr/bin/python3")


def _pump_process() -> _PumpProcess | None:
    """The pump process (started on first use, again if it died); None if it cannot be
    started here (the relay then uses the pump as a thread)."""
    global _PROCESS, _FAILED_AT
    if (_PROCESS is None or not _PROCESS.alive()) and time.monotonic() - _FAILED_AT > RETRY_S:
        try:
            _PROCESS = _PumpProcess(asyncio.get_running_loop())
        except OSError as exc:
            log.warning("kalkan: the splice pump process cannot start (%s); relaying in a thread", exc)
            _PROCESS, _FAILED_AT = None, time.monotonic()
    return _PROCESS if _PROCESS is not None and _PROCESS.alive() else None


SPLICE_AVAILABLE = splicepump.AVAILABLE and hasattr(socket, "send_fds")


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
            loop = asyncio.get_running_loop()
            server = await dial(data.server.address[0], data.server.address[1])
            first = b"".join(self.server.pending)
            self.server.pending.clear()
            if self.mode == "kernel" and not self.done and kernel_relay.add(
                    self, self.client_fd, server.fileno(), first):
                self.watchdog.can_timeout.clear()  # idle connections end with their peers
                self.client_fd = -1
                server.detach()
                return
            if first:
                await loop.sock_sendall(server, first)
            if self.done:
                server.close()
                return
            client_fd, server_fd = self.client_fd, server.detach()
            self.client_fd, server = -1, None
            pump = _pump_process() if self.mode in ("process", "kernel") else None
            if pump is not None:
                self.watchdog.can_timeout.clear()  # idle connections end with their peers
                pump.add(self, client_fd, server_fd)
            else:  # the pump as a thread of this process
                splicepump.thread_pump().add(
                    splicepump.Pair(client_fd, server_fd, self._pumped, self.watchdog))
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


# what the relays use of a client's transport; uvloop's TCPTransport has all of it but is not an
# `asyncio.Transport` subclass, hence no isinstance
_TRANSPORT_METHODS = ("set_protocol", "pause_reading", "resume_reading", "is_reading", "get_extra_info",
                      "get_write_buffer_size", "write", "can_write_eof", "write_eof", "close", "is_closing")


def _is_stream_transport(transport: object) -> bool:
    return transport is not None and all(callable(getattr(transport, name, None))
                                         for name in _TRANSPORT_METHODS)


async def dial(host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket to (`host`, `port`): each address in turn."""
    loop = asyncio.get_running_loop()
    infos = _literal(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: Exception = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        upstream = socket.socket(family, kind | socket.SOCK_NONBLOCK, proto)  # (one call less than
        # `setblocking`: the dial is on the way of every passed-through connection)
        try:
            await _sock_connect(loop, upstream, address)
        except BaseException as exc:  # (cancelled: an early dial no longer wanted)
            upstream.close()
            if not isinstance(exc, OSError):
                raise
            error = exc
            continue
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return upstream
    raise error


async def _sock_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple) -> None:
    """`loop.sock_connect`, minus a round of the loop when the handshake is already over by the
    time connect() returns (the school's LAN, a loopback origin): one poll with no wait."""
    try:
        sock.connect(address)
        return
    except (BlockingIOError, InterruptedError):
        pass
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    if not poller.poll(0):
        fut = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            loop.remove_writer(fd)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, f"connect {address}: {os.strerror(error)}")


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
    (the caller then sets mitmproxy's own TCP relay).  `mode`: "kernel", "process", "splice" or
    "asyncio"."""
    context = nextlayer.context
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(context.client.id) if proxyserver else None
    if handler is None:
        return False
    io = handler.transports.get(handler.client)
    writer = getattr(io, "writer", None)
    transport = getattr(writer, "transport", None)
    if not isinstance(getattr(io, "reader", None), asyncio.StreamReader) \
            or not _is_stream_transport(transport):
        return False
    if mode == "kernel" and not kernel_relay.available():
        mode = "process"  # (kernel_relay.why_not() was logged once)
    if mode in ("kernel", "process", "splice") and (mode == "kernel" or SPLICE_AVAILABLE) \
            and transport.get_write_buffer_size() == 0 and transport.get_extra_info("socket") is not None:
        relay: _Relay = _SpliceRelay(handler, context, first)
        relay.loop = asyncio.get_running_loop()  # type: ignore[attr-defined]
        relay.mode = mode  # type: ignore[attr-defined]
    else:
        relay = _Relay(handler, context, first)
    relay.take_client(transport)
    nextlayer.layer = _Parked(context)
    task = asyncio.get_running_loop().create_task(relay.run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return True


_TASKS: set[asyncio.Task] = set()
