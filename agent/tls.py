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

Rotation (docs/operations.md "Rotating the server certificate"): the server may announce
the fingerprint of its *next* certificate in the `Kalkan-Next-Pin` header of its answers.
Only answers read over this pinned channel count (`PinSet.announce`, called by the agent's
HTTP session for https:// servers alone), so nobody but the holder of the pinned key can
add a pin.  The agent then accepts either fingerprint; the first handshake that shows the
next certificate makes it the only pin and drops the old one (`PinSet.check`).
`Kalkan-Withdrawn-Pin` (`PinSet.withdraw`, after `kalkan-server tls cancel`) drops an
announced pin again; the pinned one is never dropped that way.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
NEXT_PIN_HEADER = "Kalkan-Next-Pin"  # the server's next certificate: "sha256:<64 hex>"
WITHDRAWN_PIN_HEADER = "Kalkan-Withdrawn-Pin"  # a next certificate the server withdrew (tls cancel)

log = logging.getLogger("kalkan.agent.tls")


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


MISMATCH_ADVICE = ("the server's certificate changed: if the server was reinstalled, or its certificate "
                   "was rotated (kalkan-server tls activate) before this workstation learned the next one, "
                   "enrol this workstation again (kalkan-agent enroll --server URL --code CODE)")


class PinSet:
    """The fingerprints this agent accepts: the pinned one and, during a rotation, the next
    one the pinned server announced.  Shared by every connection of one client (the TLS
    context reads it at each handshake), so a change applies at once.  `on_change(pins)` is
    called, under the set's lock, whenever the pins change (the runtime stores them)."""

    def __init__(self, current: str, next_pin: str | None = None,
                 on_change: Callable[[PinSet], None] | None = None) -> None:
        self.current = normalise_fingerprint(current)
        self.next = normalise_fingerprint(next_pin) if next_pin else None
        if self.next == self.current:
            self.next = None
        self.on_change = on_change
        self._lock = threading.Lock()

    @property
    def pins(self) -> list[str]:
        """Every accepted fingerprint, the pinned one first (the heartbeat reports them)."""
        return [self.current] + ([self.next] if self.next else [])

    def check(self, der: bytes | None) -> None:
        """Accept the peer certificate or raise PinMismatch.  The next certificate, once seen,
        becomes the only pin: the server has switched to it (`kalkan-server tls activate`)."""
        if der is None:
            raise PinMismatch("the server sent no certificate")
        actual = der_sha256(der)
        with self._lock:
            if actual == self.current:
                return
            if actual == self.next:
                log.warning("the server now shows its announced next certificate %s: it is the pin from now "
                            "on; the old one %s is dropped", pretty_fingerprint(actual),
                            pretty_fingerprint(self.current))
                self.current, self.next = actual, None
                self._changed()
                return
            expected = pretty_fingerprint(self.current) + (
                f" (nor the announced next {pretty_fingerprint(self.next)})" if self.next else "")
        raise PinMismatch(f"server certificate SHA-256 {pretty_fingerprint(actual)} is not the pinned "
                          f"{expected}; {MISMATCH_ADVICE}")

    def announce(self, value: str | None) -> bool:
        """The pinned server's `Kalkan-Next-Pin` header (call it only for answers read over a
        connection this set checked).  True when it added or replaced the next pin."""
        if not value:
            return False
        try:
            announced = normalise_fingerprint(value)
        except ValueError:
            log.warning("ignoring a malformed %s header: %r", NEXT_PIN_HEADER, value[:100])
            return False
        with self._lock:
            if announced in (self.current, self.next):
                return False
            log.warning("the server announced its next certificate %s; accepting it beside the pinned %s",
                        pretty_fingerprint(announced), pretty_fingerprint(self.current))
            self.next = announced
            self._changed()
            return True

    def withdraw(self, value: str | None) -> bool:
        """The pinned server's `Kalkan-Withdrawn-Pin` header: a next certificate it no longer
        means to use (`kalkan-server tls cancel`).  Drops it if it is this set's next pin; the
        pinned one is never dropped this way.  True when it dropped it."""
        if not value:
            return False
        try:
            withdrawn = normalise_fingerprint(value)
        except ValueError:
            return False
        with self._lock:
            if withdrawn != self.next:
                return False
            log.warning("the server withdrew its next certificate %s: no longer accepted",
                        pretty_fingerprint(withdrawn))
            self.next = None
            self._changed()
            return True

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # storing failed: the pins in memory still hold; said in the log
                log.exception("could not store the server certificate pins")


def pinned_context(expected: str | PinSet) -> ssl.SSLContext:
    """A client SSL context that accepts only a peer certificate with this SHA-256 (or, given a
    `PinSet`, with one of its fingerprints, as they are at each handshake)."""
    pins = expected if isinstance(expected, PinSet) else PinSet(expected)

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            try:
                pins.check(self.getpeercert(binary_form=True))
            except PinMismatch:
                self.close()
                raise

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            pins.check(self.getpeercert(binary_form=True))

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
