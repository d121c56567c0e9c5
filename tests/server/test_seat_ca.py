"""The school CA's key never leaves the server: each agent gets its own short-lived
subordinate CA, name-constrained away from ISUO, the banks and the passed-through hosts.
Checked with the real trust store: `openssl verify` and Python's ssl (OpenSSL) handshakes
with the school CA as the only trust anchor."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.proxy import ca as agent_ca
from policy_server.tls import ensure_school_ca

BANKS = ["bank.kg", "https://ebank.example.kg/login", "*.pay.kg"]
FORBIDDEN = ["emis.edu.gov.kg", "www.emis.edu.gov.kg", "bank.kg", "online.bank.kg",
             "ebank.example.kg", "shop.pay.kg"]
ALLOWED = ["www.google.com", "kloop.kg", "notbank.kg"]


@pytest.fixture
def seat_ca(api, tmp_path):
    from policy_server.policies.service import amend_policy

    with api.db() as db:
        def change(bundle):
            bundle.filtering.passthrough_hosts = list(BANKS)
            return bundle
        amend_policy(db, actor="test", comment="banks pass through", change=change)
        db.commit()
    _, auth = api.enroll("pc-01", seat="seat-1")
    r = api.client.get("/api/v1/ca", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def _leaf(ca_cert_pem: str, ca_key_pem: str, host: str, directory: Path) -> tuple[Path, Path]:
    """A server certificate for `host`, signed by the given CA key (what a stolen seat key can do)."""
    issuer = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    issuer_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
    # the chain a proxy sends: leaf, then the seat CA
    cert_path.write_text(cert.public_bytes(serialization.Encoding.PEM).decode() + ca_cert_pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _openssl_verify(root: Path, seat: Path, leaf: Path, host: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
                           "-verify_hostname", host, "-CAfile", str(root), "-untrusted", str(seat),
                           str(leaf)], capture_output=True, text=True, timeout=30)


def _handshake(root: Path, cert: Path, key: Path, host: str) -> str | None:
    """A TLS handshake to a local server presenting `cert`, from a client trusting only `root`
    and asking for `host` (as a browser would): None if accepted, else OpenSSL's reason."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(root))  # the only trust anchor
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_message
    finally:
        listener.close()
        thread.join(5)


def test_the_school_ca_key_is_never_handed_out_and_each_seat_gets_its_own(api, seat_ca, tmp_path):
    settings = api.app.state.settings
    root_key = settings.ca_key_path.read_text()
    assert seat_ca["key_pem"].strip() != root_key.strip()
    assert seat_ca["root_pem"] == settings.ca_cert_path.read_text()
    seat = x509.load_pem_x509_certificate(seat_ca["cert_pem"].encode())
    root = x509.load_pem_x509_certificate(seat_ca["root_pem"].encode())
    assert seat.issuer == root.subject and seat.subject != root.subject
    assert seat.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    lifetime = seat.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=6) < lifetime <= timedelta(days=7)
    excluded = {n.value for n in seat.extensions.get_extension_for_class(x509.NameConstraints)
                .value.excluded_subtrees}
    assert excluded == {"emis.edu.gov.kg", "bank.kg", "ebank.example.kg", "pay.kg"}
    _, other_auth = api.enroll("pc-02", seat="seat-2")
    other = api.client.get("/api/v1/ca", headers=other_auth).json()
    assert other["key_pem"] != seat_ca["key_pem"]


def test_a_stolen_seat_key_cannot_sign_for_isuo_or_a_bank(seat_ca, tmp_path):
    root, seat = tmp_path / "root.pem", tmp_path / "seat.pem"
    root.write_text(seat_ca["root_pem"])
    seat.write_text(seat_ca["cert_pem"])
    for host in FORBIDDEN:
        leaf, key = _leaf(seat_ca["cert_pem"], seat_ca["key_pem"], host, tmp_path)
        verified = _openssl_verify(root, seat, leaf, host)
        assert verified.returncode != 0 and "excluded subtree" in verified.stdout + verified.stderr, host
        reason = _handshake(root, leaf, key, host)
        assert reason is not None and "excluded subtree" in reason, (host, reason)
    for host in ALLOWED:
        leaf, key = _leaf(seat_ca["cert_pem"], seat_ca["key_pem"], host, tmp_path)
        verified = _openssl_verify(root, seat, leaf, host)
        assert verified.returncode == 0, (host, verified.stdout, verified.stderr)
        assert _handshake(root, leaf, key, host) is None, host


def test_the_proxy_ca_file_holds_the_chain_and_is_renewed_before_it_ends(seat_ca, tmp_path):
    confdir = tmp_path / "conf"
    assert agent_ca.proxy_ca_due(confdir) == 0  # none yet: fetch now
    target = agent_ca.write_proxy_ca(confdir, seat_ca["cert_pem"], seat_ca["key_pem"],
                                     root_pem=seat_ca["root_pem"], expires_at=seat_ca["expires_at"])
    text = target.read_text()
    assert text.count("BEGIN CERTIFICATE") == 2 and text.index(seat_ca["cert_pem"].strip()) < \
        text.index(seat_ca["root_pem"].strip())  # key, seat CA, school CA: the chain mitmproxy sends
    assert (confdir / agent_ca.SCHOOL_CA_MARK).read_text().strip() == seat_ca["root_pem"].strip()
    ends = datetime.fromisoformat(seat_ca["expires_at"]).timestamp()
    due = agent_ca.proxy_ca_due(confdir)
    assert abs(due - (ends - agent_ca.RENEW_BEFORE_S - datetime.now(UTC).timestamp())) < 5
    assert agent_ca.proxy_ca_due(confdir, now=ends - agent_ca.RENEW_BEFORE_S + 1) == 0


def test_an_old_school_ca_whose_key_was_handed_out_is_retired(tmp_path):
    cert, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    old_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Kalkan CA old")])
    now = datetime.now(UTC)
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(old_key.public_key()).serial_number(1)
           .not_valid_before(now).not_valid_after(now + timedelta(days=10))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .sign(old_key, hashes.SHA256()))
    cert.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(old_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    ensure_school_ca(cert, key)
    new = x509.load_pem_x509_certificate(cert.read_bytes())
    assert new.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert new.public_key().public_numbers() != old_key.public_key().public_numbers()
    assert len(list(tmp_path.glob("ca.*.retired-*"))) == 2
    before = cert.read_bytes()
    ensure_school_ca(cert, key)  # a usable one is kept
    assert cert.read_bytes() == before
