"""The files that hold the server's certificate, kept in step with the agent's pins during a
certificate rotation (docs/operations.md "Rotating the server certificate").

* `<state>/server.pem` (the certificate pinned at enrolment, for people to inspect) and
  `<state>/server.next.pem` (the next one, once announced);
* apt's trust for the school server's repository, `/etc/apt/keyrings/kalkan-server.crt`
  (written by the seat install, `KALKAN_APT_SERVER_CERT` elsewhere; left alone when absent):
  the pinned certificate and the next one, so `apt update` on the seat keeps working after
  `kalkan-server tls activate`.

The next certificate is fetched over the pinned channel (`GET /install/server.next.crt`) and
kept only when its SHA-256 is the announced one.  Pure standard library (no `cryptography`
in the long-running agent)."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

from agent.state import StatePaths, atomic_write
from agent.tls import PinSet

APT_CA_ENV = "KALKAN_APT_SERVER_CERT"
DEFAULT_APT_CA = Path("/etc/apt/keyrings/kalkan-server.crt")
NEXT_CERT_PATH = "/install/server.next.crt"


def apt_ca_path() -> Path:
    return Path(os.environ.get(APT_CA_ENV) or DEFAULT_APT_CA)


def next_cert_path(paths: StatePaths) -> Path:
    return paths.root / "server.next.pem"


def pem_sha256(pem: bytes | str) -> str | None:
    """SHA-256 (hex) of a PEM certificate's DER, None if it is not one."""
    text = pem.decode("ascii", errors="replace") if isinstance(pem, bytes) else pem
    try:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text.strip() + "\n")).hexdigest()
    except ValueError:
        return None


def _file_sha256(path: Path) -> str | None:
    try:
        return pem_sha256(path.read_bytes())
    except OSError:
        return None


def sync(client, paths: StatePaths, pins: PinSet) -> None:
    """Bring the certificate files in line with `pins`.  Raises (TransportError, ValueError)
    when the next certificate cannot be fetched or is not the announced one: try again later."""
    next_file = next_cert_path(paths)
    if pins.next:
        if _file_sha256(next_file) != pins.next:
            response = client.http.get(NEXT_CERT_PATH)
            if response.status_code != 200:
                raise ValueError(f"the server did not give its next certificate ({response.status_code})")
            if pem_sha256(response.content) != pins.next:
                raise ValueError("the certificate the server gave is not the announced next one: not kept")
            atomic_write(next_file, response.content, mode=0o644)
    elif next_file.exists():  # the server switched to it (it is the pin now), or the rotation was dropped
        if _file_sha256(next_file) == pins.current:
            os.replace(next_file, paths.server_cert)
        else:
            next_file.unlink()
    apt = apt_ca_path()
    if not apt.exists():
        return
    parts = [path.read_bytes() for path in (paths.server_cert, next_file)
             if path.exists() and _file_sha256(path) in pins.pins]
    body = b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)
    if parts and apt.read_bytes() != body:
        atomic_write(apt, body, mode=0o644)
