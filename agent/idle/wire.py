"""The local socket between the session helpers, the proxy and the root agent.

One JSON object per line; every connection carries one request and one reply, so
neither side keeps state about the other and an agent restart costs nothing.

Requests (`op`):

* ``poll``        helper → agent: ``{"op": "poll", "session": "c2"}``; reply ``{"ok": true,
  "policy": {"timeout_s": 600, "reason": "idle", "lock_request": null}}``
* ``locked``      helper → agent: ``{"op": "locked", "session", "idle_s", "timeout_s", "reason",
  "request_id"}``
* ``lock_failed`` helper → agent: ``{"op": "lock_failed", "session", "error", "idle_s", "reason",
  "request_id"}``
* ``isuo``        proxy → agent (root only): ``{"op": "isuo", "user": "aigul", "state": "start"|"end"}``

The agent learns *who* is asking from the socket's peer credentials (SO_PEERCRED),
never from the message, so a student cannot speak for another user.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = Path(os.environ.get("KALKAN_IDLE_SOCKET", "/run/kalkan/idle.sock"))
MAX_MESSAGE_BYTES = 4096


class WireError(RuntimeError):
    pass


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    return data


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_MESSAGE_BYTES:
        raise WireError(f"message over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not a JSON line: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("a message must be a JSON object")
    return message


def read_line(sock: socket.socket) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = sock.recv(1024)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > MAX_MESSAGE_BYTES:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


def request(message: dict[str, Any], *, socket_path: Path = DEFAULT_SOCKET, timeout: float = 3.0) -> dict:
    """Send one request to the root agent and return its reply.

    Raises WireError with a message a person can act on when the agent is not there.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(encode(message))
            reply = decode(read_line(sock))
    except (FileNotFoundError, ConnectionRefusedError):
        raise WireError(
            f"the Kalkan agent is not listening on {socket_path}; is the kalkan-agent service running?"
        ) from None
    except OSError as exc:
        raise WireError(f"talking to the Kalkan agent on {socket_path} failed: {exc}") from None
    if not reply.get("ok"):
        raise WireError(f"the Kalkan agent refused {message.get('op')!r}: {reply.get('error', 'no reason')}")
    return reply


def notify_isuo(user: str, state: str, *, socket_path: Path = DEFAULT_SOCKET) -> None:
    """For the filtering proxy: an ISUO session started or ended for `user` (000 §6.8)."""
    if state not in ("start", "end"):
        raise ValueError(f"ISUO state must be 'start' or 'end', not {state!r}")
    request({"op": "isuo", "user": user, "state": state}, socket_path=socket_path)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid
