"""The agent's HTTP client for the policy server, on the standard library (`http.client`).

Thin on purpose: it builds requests and returns responses; what to do with them is
decided by `agent.uplink` (events) and `agent.policy` (bundles).

Why not httpx (the server and the tests use it): the agent is long-lived and must stay
under 50 MB with every collector (issues 2 and 6); httpx and httpcore cost ~4.4 MB of
resident memory in it, for features the agent does not need (HTTP/2, async, proxies,
cookies, redirects).  What the agent needs is here: the pinned TLS context of
`agent.tls` (checked right after the handshake, before the token is sent), keep-alive
connections shared by the agent's threads, per-request timeouts, a streamed response
for the policy push channel (server-sent events), and one error type for "could not
talk to the server" (`TransportError`).
"""

from __future__ import annotations

import http.client
import json as jsonlib
import platform
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from agent.tls import NEXT_PIN_HEADER, WITHDRAWN_PIN_HEADER, PinSet, pinned_context
from agent.version import agent_version
from policy_server.protocol import PROTOCOL_VERSION, EnrollRequest, EnrollResponse

EVENTS_PATH = "/api/v1/events"
POLICY_PATH = "/api/v1/policy"
STREAM_PATH = "/api/v1/policy/stream"
ENROLL_PATH = "/api/v1/enroll"
HEALTH_PATH = "/healthz"

USER_AGENT = f"kalkan-agent/{agent_version()} (protocol {PROTOCOL_VERSION})"
DEFAULT_TIMEOUT_S = 15.0  # connect, and each read or write (as httpx's single-number timeout)
MAX_IDLE_CONNECTIONS = 2  # the uplink and the policy fetch may overlap; more would only idle

# A reused keep-alive connection the server has closed meanwhile fails like this before
# any answer; the request is then sent once more on a fresh connection (as httpx does).
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError)


class ServerError(RuntimeError):
    """The server answered in a way the agent cannot use; the message says why.
    `detail` is the server's own words (e.g. why it refused), without the agent's prefix."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class TransportError(OSError):
    """The agent could not talk to the server: refused or lost connection, timeout, a
    certificate other than the pinned one, or a malformed HTTP answer.  Always worth a
    retry later; the message names the cause."""


def _transport_error(exc: BaseException) -> TransportError:
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransportError(f"timed out talking to the server: {exc or 'no answer'}")
    text = str(exc) or exc.__class__.__name__
    return TransportError(f"{exc.__class__.__name__}: {text}")


class Response:
    """A complete answer: status, headers (case-insensitive `get`), body."""

    def __init__(self, status_code: int, reason_phrase: str, headers: Message, content: bytes) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsonlib.loads(self.content)


class StreamResponse:
    """An answer whose body is read as it arrives (the push channel).  `shutdown()` from
    another thread ends a blocked read: closing alone would not interrupt it."""

    def __init__(self, raw: http.client.HTTPResponse, sock: socket.socket | None) -> None:
        self._raw = raw
        self._sock = sock
        self.status_code = raw.status
        self.reason_phrase = raw.reason
        self.headers = raw.headers
        self.content = b""

    text = Response.text
    json = Response.json

    def read(self) -> bytes:
        try:
            self.content = self._raw.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc) from exc
        return self.content

    def iter_lines(self) -> Iterator[str]:
        """The body's lines, without their line ends, until the server ends the stream."""
        while True:
            try:
                line = self._raw.readline()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                # ValueError: the socket was shut down and closed under the read (stop).
                raise _transport_error(exc) from exc
            if not line:
                return
            yield line.decode("utf-8", errors="replace").rstrip("\r\n")

    def shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


class HttpSession:
    """Keep-alive HTTP/1.1 connections to one server, shared by the agent's threads: a
    request takes an idle connection (or opens one) and gives it back once the answer is
    read in full.  `get`/`post` take a path; they raise TransportError, never an answer
    status (that is the caller's to judge)."""

    def __init__(self, base_url: str, *, context: ssl.SSLContext | None, headers: dict[str, str],
                 timeout: float, pins: PinSet | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http(s):// URL; give the server as https://HOST:PORT")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._context = context
        self._headers = headers
        # The certificate rotation's announcement is believed only over the pinned channel.
        self._pins = pins if self._https else None
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- connections
    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection, TLS handshake and pin check done (so no byte of a request, the
        token above all, is sent to a peer with another certificate)."""
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _transport_error(exc) from exc
        return conn

    def _take(self) -> http.client.HTTPConnection | None:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _still_open(conn):
                    return conn
                conn.close()
        return None

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- requests
    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        timeout = self.timeout if timeout is None else timeout
        all_headers = {**self._headers, **(headers or {})}
        conn = self._take()
        if conn is not None:
            try:
                return self._exchange(conn, method, path, body, all_headers, timeout)
            except _STALE_CONNECTION:
                conn.close()  # the server closed it while idle: once more on a fresh one
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _transport_error(exc) from exc
        conn = self.connect(timeout)
        try:
            return self._exchange(conn, method, path, body, all_headers, timeout)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _transport_error(exc) from exc

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
                  headers: dict[str, str], timeout: float) -> Response:
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request(method, self._prefix + path, body=body, headers=headers)
        raw = conn.getresponse()
        content = raw.read()
        response = Response(raw.status, raw.reason, raw.headers, content)
        self.heard(raw.headers)
        if raw.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return response

    def get(self, path: str, *, headers: dict[str, str] | None = None,
            timeout: float | None = None) -> Response:
        return self.request("GET", path, headers=headers, timeout=timeout)

    def post(self, path: str, *, content: bytes | None = None, json: Any = None,
             headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        headers = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json, separators=(",", ":")).encode()
            headers.setdefault("Content-Type", "application/json")
        return self.request("POST", path, body=content or b"", headers=headers, timeout=timeout)

    @contextmanager
    def stream(self, path: str, *, headers: dict[str, str] | None = None, connect_timeout: float,
               read_timeout: float) -> Iterator[StreamResponse]:
        """GET on a connection of its own, the body left to read; closed on leaving."""
        conn = self.connect(connect_timeout)
        try:
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(read_timeout)
                conn.request("GET", self._prefix + path, headers={**self._headers, **(headers or {})})
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise _transport_error(exc) from exc
            self.heard(raw.headers)
            yield StreamResponse(raw, conn.sock)
        finally:
            conn.close()

    def heard(self, headers: Message) -> None:
        """An answer's headers, read over this session's pinned connection: the server's
        announcement of its next certificate, if any, goes to the pin set."""
        if self._pins is not None:
            self._pins.withdraw(headers.get(WITHDRAWN_PIN_HEADER))
            self._pins.announce(headers.get(NEXT_PIN_HEADER))


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """False when the server has closed an idle connection (it is then readable: EOF).  poll, not
    select: select cannot watch a descriptor above 1023, and a process holding that many would
    never reuse a connection again."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        readable = poller.poll(0)
    except (OSError, ValueError):
        return False
    return not readable


def _pin_set(url: str, sha256: str | PinSet | None) -> PinSet | None:
    if url.startswith("https://"):
        if not sha256:
            raise ValueError("an https:// server needs a pinned certificate fingerprint; enrol again")
        return sha256 if isinstance(sha256, PinSet) else PinSet(sha256)
    return None  # plain http:// (a server run with --no-tls, e.g. on a test bench): nothing to pin


def error_detail(response: Response | StreamResponse) -> str:
    """The server's person-readable `detail`, or the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)[:300]
    return str(body)[:300]


class ServerClient:
    """Talks to one server with the pinned certificate and the agent's bearer token."""

    def __init__(self, base_url: str, *, token: str | None, sha256: str | PinSet | None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """`sha256`: the pinned fingerprint, or a `PinSet` (the pinned one and the announced
        next one, kept up to date by this client's answers); None only for http://."""
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.pins = _pin_set(self.base_url, sha256)
        self.http = HttpSession(self.base_url, context=pinned_context(self.pins) if self.pins else None,
                                headers=headers, timeout=timeout, pins=self.pins)

    def close(self) -> None:
        self.http.close()

    # --- calls
    def healthz(self) -> bool:
        response = self.http.get(HEALTH_PATH, timeout=3.0)
        return response.status_code == 200

    def post_events(self, body: bytes, timeout: float | None = None) -> Response:
        return self.http.post(EVENTS_PATH, content=body, headers={"Content-Type": "application/json"},
                              timeout=timeout)

    def get_policy(self, etag: str | None = None) -> Response:
        headers = {"If-None-Match": etag} if etag else {}
        return self.http.get(POLICY_PATH, headers=headers)

    @contextmanager
    def policy_stream(self, read_timeout: float = 90.0) -> Iterator[StreamResponse]:
        """The SSE push channel, on a connection of its own, so shutting it down from
        another thread (on stop) does not disturb the uplink's connection."""
        with self.http.stream(STREAM_PATH, headers={"Accept": "text/event-stream"},
                              connect_timeout=10.0, read_timeout=read_timeout) as response:
            yield response

    def enroll(self, *, code: str, seat: str | None, language: str = "en") -> EnrollResponse:
        """`language` (ky/ru/en) goes out as Accept-Language: the server words a refusal in it."""
        request = EnrollRequest(
            code=code,
            hostname=socket.gethostname(),
            os=f"{platform.system()} {platform.release()}"[:128],
            agent_version=agent_version()[:32],  # (the field's limit; a Debian version may be longer)
            seat=seat,
        )
        response = self.http.post(ENROLL_PATH, json=request.model_dump(mode="json"),
                                  headers={"Accept-Language": language})
        if response.status_code >= 400:
            detail = error_detail(response)
            raise ServerError(f"the server refused the enrolment ({response.status_code}): {detail}",
                              detail=detail)
        return EnrollResponse.model_validate(response.json())
