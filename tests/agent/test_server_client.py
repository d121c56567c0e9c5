"""The agent's standard-library HTTP client (agent/server_client.py) against a raw local
socket server whose every byte the test controls: keep-alive reuse, a connection the
server closed while idle, timeouts, the streamed push channel and its shutdown."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from agent.server_client import ServerClient, TransportError, error_detail


def http_answer(status: int, body: bytes, *, close: bool = False, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n")
    return head.encode() + body


@dataclass
class RawServer:
    """Accepts connections; `serve(conn, request_bytes) -> bool` answers one request and says
    whether to keep the connection.  Counts connections and records request heads."""

    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    serve: Callable[[socket.socket, bytes], bool] | None = None
    open_sockets: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += conn.recv(65536)
    return head


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    listener = socket.create_server(("127.0.0.1", 0))
    server.port = listener.getsockname()[1]
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    head = _read_request(conn)
                except OSError:
                    return
                if head is None:
                    return
                server.heads.append(head)
                assert server.serve is not None
                if not server.serve(conn, head):
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            server.connections += 1
            server.open_sockets.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server
    finally:
        stop.set()
        listener.close()
        for conn in server.open_sockets:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_requests_reuse_one_keep_alive_connection(raw_server: RawServer) -> None:
    def serve(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(http_answer(200, b'{"accepted": [], "duplicates": [], "rejected": []}'))
        return True

    raw_server.serve = serve
    client = ServerClient(raw_server.url, token="tok", sha256=None)
    for _ in range(3):
        assert client.post_events(b'{"events": []}').status_code == 200
    assert client.get_policy(etag='"v1"').status_code == 200
    client.close()
    assert raw_server.connections == 1
    assert b"Authorization: Bearer tok" in raw_server.heads[0]
    assert b'If-None-Match: "v1"' in raw_server.heads[3]


def test_a_connection_closed_while_idle_is_replaced_once(raw_server: RawServer) -> None:
    """The server drops the kept-alive connection without saying so (as uvicorn does after
    its keep-alive timeout, here: right after the answer); the next request goes through."""

    def serve(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(http_answer(200, b"{}"))
        return False  # closes the socket without a "Connection: close" header

    raw_server.serve = serve
    client = ServerClient(raw_server.url, token="tok", sha256=None)
    assert client.healthz()
    time.sleep(0.2)
    assert client.healthz()
    assert client.post_events(b'{"events": []}').status_code == 200
    assert raw_server.connections == 3
    assert len(raw_server.heads) == 3  # each request reached the server exactly once


def test_errors_and_timeouts_are_transport_errors(raw_server: RawServer) -> None:
    def silent(conn: socket.socket, head: bytes) -> bool:
        time.sleep(2)  # never answers in time
        return False

    raw_server.serve = silent
    client = ServerClient(raw_server.url, token="tok", sha256=None, timeout=0.5)
    with pytest.raises(TransportError, match="timed out"):
        client.post_events(b'{"events": []}')
    with pytest.raises(TransportError, match="Connection refused|ConnectionRefused"):
        ServerClient("http://127.0.0.1:9", token="t", sha256=None).healthz()

    def garbage(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"this is not HTTP\r\n\r\n")
        return False

    raw_server.serve = garbage
    with pytest.raises(TransportError):
        ServerClient(raw_server.url, token="t", sha256=None).healthz()


def test_error_detail_reads_the_servers_reason(raw_server: RawServer) -> None:
    answers = iter([http_answer(403, b'{"detail": "agent revoked"}'), http_answer(502, b"bad gateway")])
    raw_server.serve = lambda conn, head: conn.sendall(next(answers)) or True
    client = ServerClient(raw_server.url, token="t", sha256=None)
    refused = client.post_events(b"{}")
    assert (refused.status_code, error_detail(refused)) == (403, "agent revoked")
    assert error_detail(client.post_events(b"{}")) == "bad gateway"


def test_push_stream_lines_arrive_as_sent_and_shutdown_ends_the_read(raw_server: RawServer) -> None:
    def serve(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in (b": keep-alive\n\n", b"data: {\"version\": 3}\n", b"\n"):
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.05)
        time.sleep(30)  # then silence: only the client's shutdown ends its read
        return False

    raw_server.serve = serve
    client = ServerClient(raw_server.url, token="t", sha256=None)
    lines: list[str] = []
    errors: list[BaseException] = []
    streams = []

    def listen() -> None:
        try:
            with client.policy_stream(read_timeout=60) as response:
                streams.append(response)
                assert response.status_code == 200
                assert response.headers.get("content-type") == "text/event-stream"
                for line in response.iter_lines():
                    lines.append(line)
        except TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while len(lines) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lines == [": keep-alive", "", 'data: {"version": 3}', ""]
    assert b"Accept: text/event-stream" in raw_server.heads[0]
    streams[0].shutdown()
    thread.join(timeout=5)
    assert not thread.is_alive(), "shutdown() did not end the blocked read"
    assert len(lines) == 4 and len(errors) <= 1  # a clean end or a transport error: both end the loop


def test_keep_alive_holds_in_a_process_with_many_descriptors(raw_server: RawServer) -> None:
    """A long-running agent may hold more than 1023 descriptors: the idle check must still see
    the kept-alive connection as open (select() cannot watch such a descriptor)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f"this machine allows {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    ballast = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        test_requests_reuse_one_keep_alive_connection(raw_server)
    finally:
        for fd in ballast:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
