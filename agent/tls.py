"""Certificate pinning for the agent ↔ server link.

A school server has no certificate from a public CA: it makes its own self-signed
certificate.  At enrolment the agent fetches that certificate, the person enrolling
may compare its SHA-256 with `kalkan-server fingerprint` (or pass `--fingerprint`),
and the agent stores the fingerprint.  From then on the agent talks only to a peer
whose certificate has exactly that SHA-256.

How: an `ssl.SSLContext` whose socket class checks the peer certificate's SHA-256
right after the TLS handshake, before a single byte of the request (the bearer
token) is sent.  Chain and host-name validation are off, because they say nothing
useful about a self-signed certificate; the handshake still proves the server holds
the certificate's private key, so an exact fingerprint match is the strongest pin
there is.  We chose this over "a cafile made from the fetched certificate" because
that would also accept any other certificate the server's key signs and it breaks
when the agent reaches the server by a name or address missing from the SAN list.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from urllib.parse import urlsplit

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class PinMismatch(ssl.SSLCertVerificationError):
    """The server showed a certificate other than the pinned one."""


def normalise_fingerprint(value: str) -> str:
    """Accept 'AB:CD:…', 'abcd…' or 'sha256:abcd…'; return 64 lowercase hex digits."""
    cleaned = value.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if not _HEX64.match(cleaned):
        raise ValueError(f"{value!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed); "
                         "copy it from `kalkan-server fingerprint` on the server")
    return cleaned


def der_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pretty_fingerprint(hex_digest: str) -> str:
    return ":".join(hex_digest[i:i + 2] for i in range(0, len(hex_digest), 2)).upper()


def _check_peer(der: bytes | None, expected: str) -> None:
    if der is None:
        raise PinMismatch("the server sent no certificate")
    actual = der_sha256(der)
    if actual != expected:
        raise PinMismatch(
            f"server certificate SHA-256 {pretty_fingerprint(actual)} is not the pinned "
            f"{pretty_fingerprint(expected)}; if the server was reinstalled, enrol this workstation again"
        )


def pinned_context(expected_sha256: str) -> ssl.SSLContext:
    """A client SSL context that accepts only a peer certificate with this SHA-256."""
    expected = normalise_fingerprint(expected_sha256)

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            try:
                _check_peer(self.getpeercert(binary_form=True), expected)
            except PinMismatch:
                self.close()
                raise

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            _check_peer(self.getpeercert(binary_form=True), expected)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = PinnedSocket
    context.sslobject_class = PinnedObject
    return context


def fetch_certificate(url: str, timeout: float = 10.0) -> tuple[str, str]:
    """Connect to an https:// URL and return (PEM, SHA-256 hex) of the certificate it shows."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an https:// URL; give the server as https://HOST:PORT")
    port = parts.port or 443
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((parts.hostname, port), timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=parts.hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError(f"{url} sent no certificate")
    return ssl.DER_cert_to_PEM_cert(der), der_sha256(der)
