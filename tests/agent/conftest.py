"""Fixtures for the agent runtime tests: a fresh state dir, a self-signed certificate,
and a small local HTTPS/HTTP endpoint that answers what a test scripts (used for the
uplink and pinning unit tests; end-to-end tests use the real server in tests/e2e)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.state import AgentState, StatePaths


@pytest.fixture
def state(tmp_path: Path) -> AgentState:
    return AgentState(StatePaths(tmp_path / "state").ensure())


@dataclass
class SelfSignedCert:
    cert_file: Path
    key_file: Path
    sha256: str


def make_self_signed(directory: Path, name: str = "localhost") -> SelfSignedCert:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return SelfSignedCert(cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex())


@pytest.fixture
def self_signed(tmp_path: Path) -> SelfSignedCert:
    return make_self_signed(tmp_path / "certs")


@dataclass
class Scripted:
    """A local endpoint: `handler(method, path, headers, body) -> (status, headers, body)`.
    Records every request it got in `requests`."""

    url: str
    requests: list[tuple[str, str, dict, bytes]] = field(default_factory=list)
    handler: Callable[[str, str, dict, bytes], tuple[int, dict, bytes]] | None = None


def _serve(tls: SelfSignedCert | None) -> Iterator[Scripted]:
    scripted = Scripted(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            scripted.requests.append((self.command, self.path, headers, body))
            if scripted.handler is None:
                status, extra, payload = 404, {}, b'{"detail": "no handler"}'
            else:
                status, extra, payload = scripted.handler(self.command, self.path, headers, body)
            self.send_response(status)
            extra = {"Content-Type": "application/json", **extra}
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    scripted.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def https_endpoint(self_signed: SelfSignedCert) -> Iterator[Scripted]:
    yield from _serve(self_signed)


@pytest.fixture
def http_endpoint() -> Iterator[Scripted]:
    yield from _serve(None)


def json_answer(status: int, payload: object, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return status, headers or {}, json.dumps(payload).encode()
