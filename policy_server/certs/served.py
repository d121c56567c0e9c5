"""The certificate this server process actually serves, for what shows or hands out its
fingerprint (the enrolment page, the seat command and `seat.sh`, `/install/server.crt`).

`kalkan-server tls activate` replaces `tls/server.crt` at once, but uvicorn keeps serving the
certificate it loaded at start until the restart.  `kalkan-server run` therefore remembers the
PEM it started with (`remember_served`, an environment variable its worker processes inherit),
and these functions answer with that one; without it (a test app, a command) the file.

It also writes that certificate's fingerprint beside it (`tls/served.sha256`): a command run on
the machine (`kalkan-server tls rotate`) cannot ask the running process, and making the next
certificate between `tls activate` and the restart would announce a pin set without the
certificate still being served (the seats would refuse it until the restart).  The page refuses
the same from the process's own memory."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

SERVED_ENV = "KALKAN_SERVED_CERT_PEM"


SERVED_FILE = "served.sha256"


def remember_served(cert_path: Path) -> None:
    from policy_server.tls import cert_fingerprint

    os.environ[SERVED_ENV] = Path(cert_path).read_text()
    recorded = Path(cert_path).parent / SERVED_FILE
    partial = recorded.with_suffix(".partial")
    partial.write_text(cert_fingerprint(Path(cert_path)) + "\n")
    partial.replace(recorded)  # whole or not at all


def recorded_served(cert_path: Path) -> str | None:
    """The fingerprint the server's last start served (`remember_served`), None before any."""
    try:
        return (Path(cert_path).parent / SERVED_FILE).read_text().strip() or None
    except OSError:
        return None


def served_pem(settings) -> bytes | None:
    pem = os.environ.get(SERVED_ENV)
    if pem:
        return pem.encode()
    try:
        return Path(settings.cert_path).read_bytes()
    except OSError:
        return None


def _cert(settings) -> x509.Certificate | None:
    pem = served_pem(settings)
    try:
        return x509.load_pem_x509_certificate(pem) if pem else None
    except ValueError:
        return None


def served_fingerprint(settings) -> str | None:
    """SHA-256 (hex) of the served certificate, what `kalkan-agent enroll --fingerprint` expects."""
    cert = _cert(settings)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() if cert else None


def remembered_fingerprint() -> str | None:
    """The served certificate's SHA-256 when `kalkan-server run` remembered it, else None."""
    pem = os.environ.get(SERVED_ENV)
    try:
        cert = x509.load_pem_x509_certificate(pem.encode()) if pem else None
    except ValueError:
        return None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() if cert else None


def served_pubkey_pin(settings) -> str | None:
    """curl's `--pinnedpubkey` value (`sha256//…`) of the served certificate's key."""
    cert = _cert(settings)
    if cert is None:
        return None
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
