"""The relay after a pass-through decision: the client's socket handed to two asyncio protocols.

Why: once the ClientHello is decided "pass through", mitmproxy relays every later chunk through
its whole layer machinery (events, the mode and HTTP layers of a CONNECT tunnel, commands, hooks
machinery) — most of what a passed-through page costs (measured: `benchmarks/proxy/
passthrough_page.py`).  Here the client's transport is taken from mitmproxy's connection handler
(`set_protocol`), the server is dialled by this module, and each chunk is one callback that
writes it to the other side, with flow control both ways.  The decision is made before, exactly
as for mitmproxy's own relay; the `server_connect` hooks of every addon still run (Kalkan's
destination check and refusals, a test's upstream mapping), and the handler learns of the end
through its reader's EOF, so `client_disconnected` (ISUO session tracking) runs as before.

Anything unusual (no live handler, a transport that is not a plain asyncio socket transport)
returns False from `hand_off` and the caller keeps mitmproxy's relay.
"""

from __future__ import annotations

import asyncio
import logging
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


def hand_off(nextlayer: layer.NextLayer, first: bytes) -> bool:
    """Pass the connection of `nextlayer` through with the cheap relay; False: not possible here
    (the caller then sets mitmproxy's own TCP relay)."""
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
    relay = _Relay(handler, context, first)
    relay.take_client(transport)
    nextlayer.layer = _Parked(context)
    task = asyncio.get_running_loop().create_task(relay.run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return True


_TASKS: set[asyncio.Task] = set()
