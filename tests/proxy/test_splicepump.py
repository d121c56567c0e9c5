"""The splice pump (agent/proxy/splicepump.py), as a thread and as its own process, on real TCP
connections: bytes both ways under flow control, half-close each way, the end told once."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.proxy import splicepump

pytestmark = pytest.mark.skipif(not splicepump.AVAILABLE, reason="Linux splice/epoll/eventfd needed")


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _read_all(sock: socket.socket, into: list[bytes]) -> threading.Thread:
    def run() -> None:
        while chunk := sock.recv(65536):
            into.append(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _exercise(hand) -> None:
    """`hand(client_end, server_end, done)` gives the proxy's two sockets to a pump; `done` is
    called when the pump has closed them."""
    browser, proxy_client_side = _tcp_pair()
    proxy_server_side, origin = _tcp_pair()
    ended = threading.Event()
    hand(proxy_client_side.detach(), proxy_server_side.detach(), ended.set)
    down, up = os.urandom(3 * 1024 * 1024 + 17), os.urandom(2 * 1024 * 1024 + 5)
    got_down: list[bytes] = []
    got_up: list[bytes] = []
    readers = [_read_all(browser, got_down), _read_all(origin, got_up)]
    writers = [threading.Thread(target=origin.sendall, args=(down,)),
               threading.Thread(target=browser.sendall, args=(up,))]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(30)
    browser.shutdown(socket.SHUT_WR)  # the browser is done sending; the origin still sends
    readers[1].join(10)
    assert hashlib.sha256(b"".join(got_up)).digest() == hashlib.sha256(up).digest()
    assert not ended.is_set()  # half-closed one way only: the other way stays open
    origin.sendall(b"after the half-close")
    origin.shutdown(socket.SHUT_WR)
    readers[0].join(10)
    assert b"".join(got_down) == down + b"after the half-close"
    _wait(ended.is_set)
    browser.close()
    origin.close()


def test_the_pump_as_a_thread_relays_both_ways_and_half_closes():
    pump = splicepump.thread_pump()
    _exercise(lambda client, server, done: pump.add(splicepump.Pair(client, server, done, None)))


def test_the_pump_as_its_own_process():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-I", str(Path(splicepump.__file__)), str(theirs.fileno())],
                            pass_fds=[theirs.fileno()])
    theirs.close()
    told: dict[int, threading.Event] = {}

    def listen() -> None:
        while message := ours.recv(8):
            told[struct.unpack("Q", message)[0]].set()

    threading.Thread(target=listen, daemon=True).start()
    try:
        def hand(client: int, server: int, done) -> None:
            told[7] = ended = threading.Event()
            threading.Thread(target=lambda: (ended.wait(30), done()), daemon=True).start()
            socket.send_fds(ours, [struct.pack("Q", 7)], [client, server])
            os.close(client)
            os.close(server)

        _exercise(hand)
        ours.shutdown(socket.SHUT_RDWR)  # the proxy goes: the pump ends by itself
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        ours.close()
