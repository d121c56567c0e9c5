"""The front on uvloop (agent/proxy/front.py `_TakenServer`): uvloop keeps a server's listening
sockets inside libuv, so the front keeps duplicates and closes uvloop's handles.  On a real uvloop
loop: the port still accepts, now through the front's socket only; mitmproxy closing the server
(a listener restarted) frees the port."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from agent.proxy.front import _TakenServer


def test_a_taken_uvloop_server_accepts_through_the_front_then_frees_its_port():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        accepted_by_uvloop = []
        server = await loop.create_server(lambda: _Record(accepted_by_uvloop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        taken = _TakenServer(server)
        assert [s.getsockname()[1] for s in taken.sockets] == [port]  # what mitmproxy reports
        accepted = loop.create_future()
        lsock = taken.sockets[0]
        loop.add_reader(lsock.fileno(), lambda: accepted.done() or accepted.set_result(lsock.accept()[0]))
        client = socket.create_connection(("127.0.0.1", port))
        conn = await asyncio.wait_for(accepted, 5)
        client.sendall(b"hello")
        assert conn.recv(5) == b"hello"
        conn.close()
        client.close()
        await asyncio.sleep(0.05)
        assert accepted_by_uvloop == [], "uvloop still accepts on the port"
        taken.close()  # mitmproxy stopping the listener
        assert taken.sockets == []
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # free again: a restarted listener can have it
        again.close()

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(scenario())


class _Record(asyncio.Protocol):
    def __init__(self, into: list) -> None:
        self.into = into

    def connection_made(self, transport) -> None:
        self.into.append(transport)
