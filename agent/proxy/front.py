"""The front listener: connections on the proxy's ports accepted and decided before mitmproxy.

Why: a passed-through HTTPS connection costs mitmproxy ~3 ms of CPU before its first byte is
relayed (accept, a connection handler, its layers, every addon's hooks walked), which is what
kept Kalkan's pass-through slower than E2Guardian's tunnel (benchmarks/proxy/RESULTS.md).

How: inside the mitmdump process (started by the addon, option `kalkan_front`), the front takes
over the accepting of mitmproxy's own listening sockets (regular and transparent modes): the
same sockets, the same ports, the same account, so the firewall rules are unchanged.  Per
connection it reads what the addon's fast path reads — the CONNECT head (explicit port) or the
original destination (transparent port, SO_ORIGINAL_DST as mitmproxy does), then the TLS
ClientHello — and asks the addon's own decision (`KalkanAddon._pass_untouched`: the verdict from
the SNI or the destination, the fronting rule, the IP-literal rule, ISUO, usage and history, the
refusals and their reports), then runs every addon's `server_connect` hook (the SNI→destination
DNS check, refusals, a test's upstream mapping) exactly as the relay after the addon's decision
does.  Only "pass through" stays here: the front dials and relays (the kernel relay,
kernel_relay.py, or the splice pump, or asyncio; option `kalkan_relay_mode`).  Everything else —
a CONNECT in pieces or with bytes after it, another method, plain HTTP, bytes that are not TLS
('nothing raw': refused and reported by the addon), a ClientHello the strict reader is unsure
of, interception, the block page — is handed to mitmproxy unchanged: the accepted socket and the
bytes already read become the stream of mitmproxy's own `handle_stream`, so its peer, its
original destination and the owner lookup are those of the real client.  A CONNECT the front
already answered ("200") is marked for the addon, which then opens the tunnel without answering
again.

The early dial: when the addon foresees that the connection will pass through (its verdict for
the CONNECT's host, or for the name this seat resolved to the transparent destination), the
server is dialled before the ClientHello is read — before the CONNECT is answered on the
explicit port, as E2Guardian and Squid do, and beside the reading of the hello on the
transparent port — and the server's half of the kernel pair is staged.  Nothing is sent to the
server before the decision.  When the hello names what was foreseen (the same name, the same
policy, a destination that name resolves to), the hello goes out at once and the decision's
records are made right after by the same `_pass_untouched`; otherwise the usual path decides
(and uses the dial when it passes, or closes it unused).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import socket
import time
import uuid
from typing import Any

from mitmproxy import connection, ctx
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import mode_specs
from mitmproxy.proxy.server_hooks import ServerConnectHook, ServerConnectionHookData

from agent.proxy import kernel_relay, splicepump
from agent.proxy import relay as relay_mod
from agent.proxy.fastconnect import MAX_HEAD, parse_connect
from agent.proxy.sni import UNSURE, client_hello_sni

log = logging.getLogger("kalkan.proxy.front")
FIRST_BYTES_S = 30.0  # a client that says nothing this long goes to mitmproxy (its own timeouts)
MAX_HELLO = 16384 + 5
ACCEPT_BATCH = 32
# A ClientHello this soon after its dial was foreseen for its (known) owner is decided as foreseen,
# without asking the policy again: the same policy object and owner give the same verdict, and
# the clock only matters to schedules of minutes.  (`_pass_untouched` decides again, and records,
# right after the hello leaves; a different answer resets the connection.)
FORESIGHT_S = 1.0
HTTPS_PORT = 443

# The front's own connection objects get ids without a uuid4 each (a getrandom() call and a UUID
# built and formatted, three objects per connection).  They are only keys of the addon's
# per-connection records and never leave this process; the random prefix keeps them apart from
# mitmproxy's own ids.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count()


def _front_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


class _Listener(socket.socket):
    """A taken listening socket whose address is read once: mitmproxy asks every listener for it
    before each dial (its check that the proxy does not connect to itself), and a listening
    socket's address never changes."""

    def __init__(self, fileno: int) -> None:
        super().__init__(fileno=fileno)
        self._address = super().getsockname()

    def getsockname(self) -> Any:
        return self._address


class _TakenServer:
    """A uvloop server's listening sockets, taken over by the front.  uvloop keeps them inside
    libuv, where no reader can be removed as asyncio's can; so the front keeps a duplicate of each
    (which keeps it listening) and closes uvloop's handles.  This object takes the server's place
    in mitmproxy's list: its `sockets` give mitmproxy the addresses it listens on, and its
    `close()` (mitmproxy stopping or restarting the listener) closes the duplicates, so the port
    is free again."""

    def __init__(self, server: Any) -> None:
        self.sockets = []
        for pseudo in server.sockets:
            sock = _Listener(fileno=os.dup(pseudo.fileno()))
            sock.setblocking(False)
            self.sockets.append(sock)
        server.close()

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        self.sockets = []

    async def wait_closed(self) -> None:
        return None


class Front:
    def __init__(self, addon: Any) -> None:
        self.addon = addon
        self.adopted: dict[int, Any] = {}  # fd → the listening socket taken over
        self.tasks: set[asyncio.Task] = set()
        self._hooks: list = []
        self._hooks_of: tuple[list | None, int] = (None, 0)  # the chain (held) and its length

    # ------------------------------------------------------------------ listening

    def adopt(self) -> int:
        """Take over the accepting of mitmproxy's regular and transparent listeners (again after
        mitmproxy restarted them); returns how many sockets the front accepts on."""
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None:
            return 0
        loop = asyncio.get_running_loop()
        live = set()
        for instance in proxyserver.servers:
            if not isinstance(instance.mode, (mode_specs.RegularMode, mode_specs.TransparentMode)):
                continue
            servers = getattr(instance, "_servers", [])
            for i, server in enumerate(servers):
                if type(server).__module__.startswith("uvloop"):
                    server = servers[i] = _TakenServer(server)
                for tsock in getattr(server, "sockets", ()):
                    # asyncio's TransportSocket wraps the socket; a taken uvloop server's are ours
                    sock = tsock if isinstance(tsock, socket.socket) else getattr(tsock, "_sock", None)
                    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
                        continue
                    fd = sock.fileno()
                    if fd < 0:
                        continue
                    live.add(fd)
                    if self.adopted.get(fd) is sock:
                        continue
                    loop.remove_reader(fd)  # asyncio's accept for mitmproxy's server
                    loop.add_reader(fd, self._accept, sock, instance)
                    self.adopted[fd] = sock
                    # the students' sockets to this port (explicit) or to HTTPS (redirected here)
                    # may send by the kernel relay's direct path
                    kernel_relay.watch_port(sock.getsockname()[1] if isinstance(
                        instance.mode, mode_specs.RegularMode) else HTTPS_PORT)
        for fd in set(self.adopted) - live:
            del self.adopted[fd]
        return len(self.adopted)

    def _accept(self, lsock: socket.socket, instance: Any) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the connection waits in the backlog
                log.warning("kalkan front: accept failed: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports do
            task = loop.create_task(self._serve(sock, instance))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run_hooks(self, data: ServerConnectionHookData) -> None:
        for hook in self._server_connect_hooks():  # every addon's, in mitmproxy's order
            result = hook(data)
            if result is not None and inspect.isawaitable(result):
                await result

    def _server_connect_hooks(self) -> list:
        """Every addon's `server_connect`, in the order mitmproxy calls them (its chain and each
        addon's children), looked up again whenever the chain changes."""
        addons = ctx.master.addons
        chain = addons.chain
        # mitmproxy appends to its chain to add an addon and makes a new list to remove one; the
        # list held here cannot be freed, so no other list can take its place unseen
        if self._hooks_of[0] is not chain or self._hooks_of[1] != len(chain):
            self._hooks = [func for addon in chain
                           for _, func in addons._iter_hooks(addon, ServerConnectHook(None))]  # type: ignore[arg-type]
            self._hooks_of = (chain, len(chain))
        return self._hooks

    # ------------------------------------------------------------------ one connection

    async def _serve(self, sock: socket.socket, instance: Any) -> None:
        loop = asyncio.get_running_loop()
        addon = self.addon
        client: connection.Client | None = None
        early: _EarlyDial | None = None
        try:
            transparent = isinstance(instance.mode, mode_specs.TransparentMode)
            peer = sock.getpeername()
            if transparent:
                from mitmproxy import platform

                dst = platform.original_addr(sock)  # type: ignore[misc]
            else:
                dst = sock.getsockname()
            client = connection.Client(peername=peer, sockname=dst, proxy_mode=instance.mode,
                                       state=ConnectionState.OPEN, id=_front_id())
            if transparent:
                addon.client_connected(client)
                if dst[1] == HTTPS_PORT:  # dialled while the ClientHello is on its way (plain HTTP
                    # goes to mitmproxy, which dials by itself: no second connection for it)
                    early = self._dial_early(sock, client, (dst[0], dst[1]), addon.dest.name_of(dst[0]), True)
                    if early is not None:
                        early.start()
            first = await _recv(sock)
            if not first:  # closed, or silent for FIRST_BYTES_S: mitmproxy's business
                if transparent:
                    addon.client_disconnected(client)
                client = None
                sock = await self._hand_off(sock, instance, first, early)
                return
            if transparent:
                server_address = (dst[0], dst[1])
                answered = None
                hello = first
            else:
                target = parse_connect(first)
                if target is None:  # not one plain CONNECT head: mitmproxy's HTTP layer
                    client = None
                    sock = await self._hand_off(sock, instance, first)
                    return
                host, port, version = target
                web_port = port in addon.engine.proxy_ports
                if not web_port:
                    addon.client_connected(client)
                    if not addon._subject_of(client).system:
                        addon.client_disconnected(client)
                        client = None
                        sock = await self._hand_off(sock, instance, first)  # refused and reported there
                        return
                server_address = (host, port)
                answered = (host, port, version)
                # Answered at once; then, while the client writes its ClientHello, the owner is
                # looked up and a tunnel that will most likely pass through for that owner is
                # dialled.  The hello then finds the server connected, as E2Guardian's tunnel
                # (which dials before it answers) does.
                await loop.sock_sendall(sock, version + b" 200 Connection established\r\n\r\n")
                if web_port:  # (another port: a service account's, looked up above)
                    addon.client_connected(client)
                early = self._dial_early(sock, client, server_address, host, False) if web_port else None
                if early is not None:
                    await early.dial_now()
                hello = await self._read_hello(sock)
            sni = client_hello_sni(hello) if hello and hello[0] == 0x16 else UNSURE
            if early is not None and sni is not UNSURE and sni and early.foreseen(sni):
                if await self._pass_foreseen(sock, client, server_address, hello, sni, early):
                    early = client = sock = None  # type: ignore[assignment]  # the relay's now
                    return
            server = connection.Server(address=server_address, id=_front_id())
            if sni is UNSURE or not addon._pass_untouched(client, server, sni):  # type: ignore[arg-type]
                # interception, HTTP, anything raw (refused there), an unusual hello: mitmproxy
                addon.client_disconnected(client)
                client = None
                sock = await self._hand_off(sock, instance, hello, answered, early)
                return
            if client.id in addon._refused:  # blocked, never intercepted: as `server_connect` does
                return
            await self._pass(sock, client, server, hello, early)
            client = None  # the relay ends it
            sock = None  # type: ignore[assignment]
        except Exception as exc:  # the origin is down, a hook failed: the client sees a closed connection
            log.debug("kalkan front: connection failed: %s", exc)
        finally:
            if early is not None:
                early.drop()
            if client is not None:
                addon.client_disconnected(client)
            if sock is not None:
                sock.close()

    def _dial_early(self, sock: socket.socket, client: connection.Client, address: tuple[str, int],
                    name: str | None, transparent: bool) -> _EarlyDial | None:
        """Start dialling `address` now when the decision to come will most likely pass the
        connection through (the addon's verdict for `name`, the CONNECT's host or the name this
        seat resolved to the destination): the dial then overlaps the client's writing of its
        ClientHello, as E2Guardian's tunnel dials at the CONNECT.  Nothing is sent on it before
        the decision; a connection that is not passed through closes it unused."""
        if not name or not self.addon.likely_passed(client, name):
            return None
        return _EarlyDial(self, sock, client, address, name, transparent)

    async def _read_hello(self, sock: socket.socket) -> bytes:
        """The tunnel's first bytes; a TLS record is read whole (up to one record) when it comes in
        pieces, as mitmproxy's TLS layer would wait for it."""
        data = await _recv(sock)
        while data and data[0] == 0x16 and 5 <= len(data) < min(5 + int.from_bytes(data[3:5], "big"),
                                                                  MAX_HELLO):
            more = await _recv(sock)
            if not more:
                break
            data += more
        return data

    async def _hand_off(self, sock: socket.socket, instance: Any, data: bytes,
                        answered: tuple[str, int, bytes] | None = None,
                        early: _EarlyDial | None = None) -> None:
        """The connection becomes mitmproxy's, as if it had accepted it, with `data` unread (an
        early dial is closed first: mitmproxy dials by itself, and may hand the client's socket
        to the kernel relay under the same key)."""
        if early is not None:
            early.drop()
        loop = asyncio.get_running_loop()
        if answered is not None:
            self.addon.front_answered(sock.getpeername(), answered)
        reader = asyncio.StreamReader(limit=2 ** 16, loop=loop)
        if data:
            reader.feed_data(data)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await instance.handle_stream(reader, writer)

    async def _pass_foreseen(self, sock: socket.socket, client: connection.Client,
                             server_address: tuple[str, int], hello: bytes, sni: str,
                             early: _EarlyDial) -> bool:
        """The ClientHello names what the early dial foresaw (the same name, the same policy, and
        in transparent mode a destination that name resolves to): the decision is the one
        already taken, so the hello goes out at once, and the decision's records (usage,
        history, the lesson, ISUO) are made right after by the same `_pass_untouched`.  False:
        not possible here (no staged kernel pair); the usual path goes on."""
        dialled = await early.result()
        if dialled is None or dialled[2] is None:
            return False
        _, upstream, staged = dialled
        early.take()
        end = _End(self.addon, client)
        if not kernel_relay.start(staged, end, hello):  # (the pair is abandoned)
            upstream.close()  # the usual path dials again
            return False
        sock.detach()
        upstream.detach()
        addon = self.addon
        if not addon._pass_untouched(client, connection.Server(address=server_address, id=_front_id()), sni) \
                or client.id in addon._refused:  # the policy said otherwise within the same instant
            log.warning("kalkan front: %s was foreseen passed but is not; reset", sni)
            staged.finish(reset=True)
        return True

    async def _pass(self, sock: socket.socket, client: connection.Client, server: connection.Server,
                    hello: bytes, early: _EarlyDial | None = None) -> None:
        """Every addon's `server_connect` (the destination check, a test's mapping), the dial, the
        relay — what `relay.hand_off` does after the addon's decision.  With an early dial, the
        hooks already ran for the same address before the decision; only Kalkan's own, whose
        answer depends on the decision (the name claimed, a refusal), runs again now."""
        loop = asyncio.get_running_loop()
        addon = self.addon
        upstream: socket.socket | None = None
        staged: kernel_relay.Pair | None = None
        try:
            dialled = await early.result() if early is not None else None
            if dialled is not None:
                early.take()  # type: ignore[union-attr]
                data, upstream, staged = dialled
                # Kalkan's hook again, now that the decision is made, on the address as that hook
                # saw it in the chain
                check = ServerConnectionHookData(
                    server=connection.Server(address=early.address_for_check, id=_front_id()), client=client)  # type: ignore[union-attr]
                await addon.server_connect(check)
                if check.server.error:
                    raise ConnectionRefusedError(check.server.error)
            else:
                data = ServerConnectionHookData(server=server, client=client)
                await self._run_hooks(data)
                if server.error or not server.address:
                    raise ConnectionRefusedError(server.error or "no address")
                upstream = await relay_mod.dial(server.address[0], server.address[1])
            end = _End(addon, client)
            if staged is not None:
                started = kernel_relay.start(staged, end, hello)
                staged = None
            elif addon._relay_mode == "kernel":
                started = kernel_relay.add(end, sock.fileno(), upstream.fileno(), hello)
            else:
                started = False
            if started:
                sock.detach()  # the kernel relay's now (it closes them and tells `end`)
                upstream.detach()
                return
            await loop.sock_sendall(upstream, hello)
        except BaseException:
            if staged is not None:
                kernel_relay.abandon(staged)
            if upstream is not None:
                upstream.close()
            sock.close()
            addon.client_disconnected(client)
            raise
        mode = addon._relay_mode
        pumped_by_process = mode in ("process", "kernel") and relay_mod.SPLICE_AVAILABLE
        pump = relay_mod._pump_process() if pumped_by_process else None
        if pump is not None:  # the pump process (relay.py): its copies of the sockets, ours closed
            try:
                pump.add(end, os.dup(sock.fileno()), os.dup(upstream.fileno()))
            finally:
                sock.close()
                upstream.close()
            return
        if mode in ("process", "splice") and relay_mod.SPLICE_AVAILABLE:  # the pump as a thread
            def pumped() -> None:  # in the pump thread
                loop.call_soon_threadsafe(end.close)

            splicepump.thread_pump().add(splicepump.Pair(sock.detach(), upstream.detach(), pumped, None))
            return
        await _asyncio_relay(end, sock, upstream)


class _EarlyDial:
    """`Front._dial_early`: every addon's `server_connect` for the address, the dial, and (kernel
    relay) the server's half of the pair staged in the map.  Whoever uses the result `take()`s
    it (its sockets are then theirs); `drop()` closes whatever nobody took."""

    def __init__(self, front: Front, sock: socket.socket, client: connection.Client,
                 address: tuple[str, int], name: str, transparent: bool) -> None:
        self.front, self.sock, self.client, self.address = front, sock, client, address
        self.name = name.lower().rstrip(".")
        self.transparent = transparent
        self.engine = front.addon.engine  # the policy the foresight was made with
        self.for_owner = front.addon.owner_known(client)  # … and for whom (else: for some group)
        self.at = time.monotonic()
        self.address_for_check = address
        self.handed = False
        self.task: asyncio.Future = asyncio.get_running_loop().create_future()  # `start` or `dial_now`

    def start(self) -> _EarlyDial:
        """Dial in a task, beside the reading of the ClientHello."""
        self.task = asyncio.get_running_loop().create_task(self._dial())
        return self

    async def _dial(self) -> tuple | None:
        try:
            server = connection.Server(address=self.address, id=_front_id())
            data = ServerConnectionHookData(server=server, client=self.client)
            own = getattr(self.front.addon, "server_connect", None)
            for hook in self.front._server_connect_hooks():
                if hook == own:  # what Kalkan's hook sees (later hooks may change the address)
                    self.address_for_check = server.address
                result = hook(data)
                if result is not None and inspect.isawaitable(result):
                    await result
            if data.server.error or not data.server.address:
                return None
            upstream = await relay_mod.dial(data.server.address[0], data.server.address[1])
        except (OSError, ValueError) as exc:
            log.debug("kalkan front: early dial to %s failed: %s", self.address, exc)
            return None
        staged = None
        if self.front.addon._relay_mode == "kernel":
            staged = kernel_relay.stage(self.sock.fileno(), upstream.fileno(),
                                        (self.client.peername, self.client.sockname))
        return data, upstream, staged

    def foreseen(self, sni: str) -> bool:
        """Whether the decision for `sni` is the one foreseen: the same name under the same
        policy, passed through for the connection's owner, and (transparent mode) a destination
        this name resolves to."""
        addon = self.front.addon
        if sni.lower().rstrip(".") != self.name or addon.engine is not self.engine:
            return False
        fresh = self.for_owner and time.monotonic() - self.at < FORESIGHT_S
        if not fresh and not addon.likely_passed(self.client, self.name):  # the owner's verdict now
            return False
        return not self.transparent or addon.dest.leads_to_cached(self.name, self.address[0]) is True

    async def dial_now(self) -> None:
        """Dial here and now, inline (no task, no extra round of the loop): the client is busy
        writing its ClientHello meanwhile."""
        self.task = asyncio.get_running_loop().create_future()
        try:
            self.task.set_result(await self._dial())
        except Exception as exc:  # (e.g. a hook that failed: the usual path meets it again)
            self.task.set_result(None)
            log.debug("kalkan front: early dial failed: %s", exc)

    async def result(self) -> tuple | None:
        """(hook data, the connected socket, the staged kernel pair or None); None: no dial (it
        failed, or was already taken)."""
        dialled = await self.task
        return None if self.handed else dialled

    def take(self) -> None:
        self.handed = True

    def drop(self) -> None:
        if self.handed:
            return
        self.handed = True
        if not self.task.done():
            self.task.cancel()  # a dial still under way closes its socket
            return
        if self.task.cancelled() or self.task.exception() is not None or self.task.result() is None:
            return
        _, upstream, staged = self.task.result()
        if staged is not None:
            kernel_relay.abandon(staged)
        upstream.close()


async def _recv(sock: socket.socket) -> bytes:
    """What the client has sent (at once when it is there); b"" when it closed or stayed silent
    for FIRST_BYTES_S.  (asyncio's sock_recv under wait_for costs a task per read.)"""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        pass
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            finish()
            if not fut.done():
                fut.set_exception(exc)
            return
        finish()
        if not fut.done():
            fut.set_result(data)

    def silent() -> None:
        loop.remove_reader(fd)
        if not fut.done():
            fut.set_result(b"")

    def finish() -> None:
        loop.remove_reader(fd)
        timer.cancel()

    timer = loop.call_later(FIRST_BYTES_S, silent)
    loop.add_reader(fd, ready)
    fut.add_done_callback(lambda f: finish() if f.cancelled() else None)
    return await fut


class _End:
    """The end of a passed-through connection: the addon forgets it (`client_disconnected`)."""

    def __init__(self, addon: Any, client: connection.Client) -> None:
        self.addon, self.client, self.done = addon, client, False
        self.transports: list[asyncio.Transport] = []

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        for transport in self.transports:
            if not transport.is_closing():
                transport.close()
        self.client.state = ConnectionState.CLOSED
        self.addon.client_disconnected(self.client)


class _NoWatch:
    @staticmethod
    def register_activity() -> None:
        return None


class _Pair:
    """What `relay._Side` needs of its relay."""

    watchdog = _NoWatch()

    def __init__(self, end: _End) -> None:
        self.end = end

    def lost(self, side) -> None:
        self.end.close()

    def close(self) -> None:
        self.end.close()


async def _asyncio_relay(end: _End, client_sock: socket.socket, server_sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    pair = _Pair(end)
    client, server = relay_mod._Side(pair, "client"), relay_mod._Side(pair, "server")  # type: ignore[arg-type]
    client.peer, server.peer = server, client
    try:
        ct, _ = await loop.connect_accepted_socket(lambda: client, client_sock)
        end.transports.append(ct)
        st, _ = await loop.connect_accepted_socket(lambda: server, server_sock)
        end.transports.append(st)
    except BaseException:
        client_sock.close()
        server_sock.close()
        end.close()
        raise
    client.flush_pending()
    server.flush_pending()


__all__ = ["Front", "MAX_HEAD"]
