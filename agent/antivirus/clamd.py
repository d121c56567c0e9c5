"""A small typed client of clamd's documented socket protocol (man clamd).

Why our own and not a package (see docs/antivirus.md for the comparison):
`clamd` (2014) is unmaintained; `pyclamd` and `clamav-client` speak SCAN,
CONTSCAN, MULTISCAN and INSTREAM only, one request per connection, so neither
passes file descriptors (FILDES) nor pipelines requests in a session
(zIDSESSION).  Those two are what make a full scan as fast as
`clamdscan --multiscan --fdpass`, and FILDES lets clamd (user `clamav`) scan
files only root can read, because the agent (root) opens them.

Commands use the `z` prefix (NUL-terminated), replies end with NUL.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_SOCKET = Path("/run/clamav/clamd.ctl")
CHUNK = 64 * 1024

_REPLY = re.compile(
    r"^(?:(?P<id>\d+): )?(?P<what>.*?): (?:(?P<sig>.+) (?P<found>FOUND)|(?P<ok>OK)|(?P<err>.*) ERROR)$",
    re.DOTALL,
)


class ClamdError(RuntimeError):
    """clamd answered, but with an error."""


class ClamdUnavailable(ClamdError):
    """clamd cannot be reached; the message says what to do."""


@dataclass(frozen=True)
class ClamdVersion:
    engine: str  # "1.4.6"
    signature_version: str | None  # "27400"; None when clamd loaded no daily database
    signature_date: datetime | None

    @classmethod
    def parse(cls, reply: str) -> ClamdVersion:
        """Parse 'ClamAV 1.4.6/27400/Fri Jan  2 03:04:00 2026' (the two last parts optional)."""
        text = reply.strip().removeprefix("ClamAV ").strip()
        engine, _, rest = text.partition("/")
        if not rest:
            return cls(engine=engine, signature_version=None, signature_date=None)
        version, _, date_text = rest.partition("/")
        try:
            # clamd prints the database build time as local ctime(); the agent runs in the same zone
            signature_date = datetime.strptime(" ".join(date_text.split()), "%a %b %d %H:%M:%S %Y")
            signature_date = signature_date.astimezone(UTC)
        except ValueError:
            signature_date = None
        return cls(engine=engine, signature_version=version or None, signature_date=signature_date)


@dataclass(frozen=True)
class ScanReply:
    """One file's verdict."""

    request_id: int | None
    subject: str  # the path, "stream" or "fd[N]"
    signature: str | None  # set when infected
    error: str | None  # set when clamd could not scan it

    @property
    def infected(self) -> bool:
        return self.signature is not None

    @classmethod
    def parse(cls, line: str) -> ScanReply:
        match = _REPLY.match(line)
        if not match:
            raise ClamdError(f"clamd sent a reply Kalkan does not understand: {line!r}")
        rid = match["id"]
        return cls(
            request_id=int(rid) if rid else None,
            subject=match["what"],
            signature=match["sig"],
            error=match["err"],
        )


def _clean_signature(name: str) -> str:
    # clamd marks third-party signatures ".UNOFFICIAL"; the name without it is what people look up
    return name.removesuffix(".UNOFFICIAL")


class ClamdClient:
    """Talks to one clamd over its unix socket (the way Kalkan installs it)."""

    def __init__(self, socket_path: str | Path = DEFAULT_SOCKET, timeout: float = 30.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    # -- connections

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except FileNotFoundError:
            sock.close()
            raise ClamdUnavailable(
                f"clamd's socket {self.socket_path} does not exist: clamd is not running or not installed. "
                "Fix: apt-get install clamav-daemon, copy install/clamav/clamd.conf to /etc/clamav/ and "
                "run 'systemctl restart clamav-daemon'."
            ) from None
        except OSError as exc:
            sock.close()
            raise ClamdUnavailable(
                f"cannot connect to clamd at {self.socket_path} ({exc.strerror or exc}). "
                "Fix: 'systemctl status clamav-daemon' shows why it stopped; restart it."
            ) from None
        return sock

    def _command(self, command: str) -> str:
        with self.connect() as sock:
            sock.sendall(b"z" + command.encode() + b"\0")
            return _read_until_nul(sock).decode(errors="replace")

    # -- simple commands

    def ping(self) -> bool:
        return self._command("PING") == "PONG"

    def version(self) -> ClamdVersion:
        return ClamdVersion.parse(self._command("VERSION"))

    def reload(self) -> None:
        self._command("RELOAD")

    # -- scanning

    def scan_fd(self, fd: int) -> ScanReply:
        """Scan one open file by passing its descriptor (FILDES)."""
        with self.connect() as sock:
            sock.sendall(b"zFILDES\0")
            socket.send_fds(sock, [b"\0"], [fd])
            return _normalise(ScanReply.parse(_read_until_nul(sock).decode(errors="replace")))

    def scan_path(self, path: str | Path) -> ScanReply:
        """Open a file and scan it through FILDES (works for files only root can read)."""
        fd = open_for_scan(path)
        try:
            return self.scan_fd(fd)
        finally:
            os.close(fd)

    def instream(self, data: bytes) -> ScanReply:
        """Scan bytes sent over the socket (INSTREAM)."""
        with self.connect() as sock:
            sock.sendall(b"zINSTREAM\0")
            for start in range(0, len(data), CHUNK):
                chunk = data[start:start + CHUNK]
                sock.sendall(len(chunk).to_bytes(4, "big") + chunk)
            sock.sendall(b"\0\0\0\0")
            return _normalise(ScanReply.parse(_read_until_nul(sock).decode(errors="replace")))

    def contscan(self, path: str | Path, *, multi: bool = False) -> list[ScanReply]:
        """CONTSCAN / MULTISCAN of a path as clamd (user clamav) sees it; only FOUND/ERROR lines."""
        with self.connect() as sock:
            sock.settimeout(None)
            sock.sendall(f"z{'MULTISCAN' if multi else 'CONTSCAN'} {path}\0".encode())
            replies = []
            for line in _read_all_nul(sock):
                reply = _normalise(ScanReply.parse(line))
                if reply.signature or reply.error:
                    replies.append(reply)
            return replies

    def session(self) -> ClamdSession:
        return ClamdSession(self.connect())


class ClamdSession:
    """A zIDSESSION: many FILDES requests pipelined on one connection.

    clamd scans the requests of a session in parallel with its thread pool and
    answers each with its request number ("3: fd[12]: OK"), in any order.  The
    caller bounds how many are in flight (below clamd's MaxQueue).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.sendall(b"zIDSESSION\0")
        self._next_id = 1
        self._buffer = b""
        self.in_flight = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_fd(self, fd: int) -> int:
        """Queue one descriptor; return its request number (the caller may close fd at once)."""
        request_id = self._next_id
        self._next_id += 1
        self.sock.sendall(b"zFILDES\0")
        socket.send_fds(self.sock, [b"\0"], [fd])
        self.in_flight += 1
        return request_id

    def read_replies(self) -> list[ScanReply]:
        """Read what is available (blocks for at least one reply)."""
        while b"\0" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ClamdUnavailable("clamd closed the scanning session (did it stop or restart?)")
            self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\0")
        replies = [_normalise(ScanReply.parse(line.decode(errors="replace"))) for line in complete]
        self.in_flight -= len(replies)
        return replies

    def close(self) -> None:
        try:
            self.sock.sendall(b"zEND\0")
        except OSError:
            pass
        self.sock.close()


def _normalise(reply: ScanReply) -> ScanReply:
    if reply.signature:
        return ScanReply(reply.request_id, reply.subject, _clean_signature(reply.signature), None)
    return reply


def _read_until_nul(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.rstrip(b"\0")


def _read_all_nul(sock: socket.socket) -> Iterator[str]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\0")
        for line in complete:
            if line:
                yield line.decode(errors="replace")
    if buffer.strip(b"\0"):
        yield buffer.rstrip(b"\0").decode(errors="replace")


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)


def open_for_scan(path: str | Path) -> int:
    """Open a file for scanning without following a symlink, blocking on a FIFO or touching atime."""
    try:
        return os.open(path, _OPEN_FLAGS | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(path, _OPEN_FLAGS)  # O_NOATIME needs ownership (or root)
