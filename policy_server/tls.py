"""The server's self-signed TLS certificate and the school CA, both kept in the state dir.

A school has no public CA, so the server makes its own certificate (SAN: localhost,
127.0.0.1, ::1 and the machine's hostname) and agents pin its SHA-256 at enrolment
(`kalkan-server fingerprint` prints it).  The *school CA* is a separate key pair used only by
the workstations' filtering proxies to intercept the few hosts they must look into (search
engines, blocked pages); agents fetch it with `GET /api/v1/ca`.

Both are created once and reused; keys are written with mode 0600.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVER_CERT_DAYS = 3650
CA_DAYS = 3650
AGENT_CA_HOURS = 7 * 24  # a seat's subordinate CA: the agent renews it with 2 days left


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_server_cert(cert_path: Path, key_path: Path, *, extra_names: list[str] | None = None) -> None:
    """Create the self-signed server certificate unless it already exists."""
    if cert_path.exists() and key_path.exists():
        return
    write_server_cert(cert_path, key_path, ip_addresses=["127.0.0.1", "::1"],
                      dns_names=["localhost", socket.gethostname(), *(extra_names or [])])


def write_server_cert(cert_path: Path, key_path: Path, *, dns_names: list[str],
                      ip_addresses: list[str]) -> None:
    """A new key and self-signed server certificate for these names (SANs), written over
    `cert_path`/`key_path` (also the next certificate of a rotation: policy_server/certs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(set(dns_names))]
    sans += [x509.IPAddress(ipaddress.ip_address(a))
             for a in sorted(set(ip_addresses), key=lambda a: (":" in a, a))]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Kalkan server {hostname}"[:64])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def cert_names(cert_path: Path) -> tuple[list[str], list[str]]:
    """The certificate's SANs: (DNS names, IP addresses)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (list(san.get_values_for_type(x509.DNSName)),
            [str(a) for a in san.get_values_for_type(x509.IPAddress)])


def _allows_subordinates(cert_path: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and (constraints.path_length is None or constraints.path_length >= 1)


def ensure_school_ca(cert_path: Path, key_path: Path, *, school: str = "Kalkan school") -> None:
    """Create the school CA (the root the workstations trust), unless a usable one exists.

    A school CA of the old design (pathlen 0: its key was sent to every agent) is retired:
    its files are kept beside as `*.retired-YYYYmmddHHMMSS`, and a new key and certificate made."""
    if cert_path.exists() and key_path.exists():
        if _allows_subordinates(cert_path):
            return
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        for path in (cert_path, key_path):
            os.replace(path, path.with_name(f"{path.name}.retired-{stamp}"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"Kalkan CA {school}"[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kalkan"),
    ])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


_CA_KEY_USAGE = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False, data_encipherment=False,
                              key_agreement=False, encipher_only=False, decipher_only=False)


def excluded_hosts(bundle) -> list[str]:
    """The DNS names no seat CA may sign for: ISUO's hosts and the policy's passed-through
    hosts (banks, …), as bare domains (a name constraint on `bank.kg` covers its subdomains).
    URL prefixes give their host; wildcards their domain; IP addresses are kept as such."""
    raw = [*bundle.isuo.hosts, *bundle.filtering.passthrough_hosts]
    names: set[str] = set()
    for entry in raw:
        host = str(entry).strip().lower()
        if "://" in host:
            host = host.split("://", 1)[1]
        host = host.split("/", 1)[0].split("@")[-1]
        if host.startswith("[") and "]" in host:
            host = host[1:host.index("]")]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        host = host.lstrip("*").lstrip(".").rstrip(".")
        if host:
            names.add(host)
    return sorted(names)


def _excluded_subtrees(hosts: list[str]) -> list[x509.GeneralName]:
    subtrees: list[x509.GeneralName] = []
    for host in hosts:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            try:
                subtrees.append(x509.DNSName(host.encode("idna").decode("ascii")))
            except (UnicodeError, ValueError):
                continue  # not a host name at all: nothing to exclude
            continue
        subtrees.append(x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}")))
    return subtrees


def issue_agent_ca(root_cert_path: Path, root_key_path: Path, *, agent_id: str, excluded: list[str],
                   hours: float = AGENT_CA_HOURS, now: datetime | None = None) -> tuple[str, str, datetime]:
    """A new subordinate CA for one agent: (certificate PEM, key PEM, not-after).  pathlen 0
    (it signs only leaves), name constraints excluding `excluded` (`excluded_hosts`)."""
    root_cert = x509.load_pem_x509_certificate(root_cert_path.read_bytes())
    root_key = serialization.load_pem_private_key(root_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or datetime.now(UTC)
    expires = now + timedelta(hours=hours)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"Kalkan seat CA {agent_id}"[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kalkan"),
    ])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(expires)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                       critical=False)
    )
    subtrees = _excluded_subtrees(excluded)
    if subtrees:
        builder = builder.add_extension(x509.NameConstraints(permitted_subtrees=None,
                                                             excluded_subtrees=subtrees), critical=True)
    cert = builder.sign(root_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode(), expires


def cert_fingerprint(cert_path: Path) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex without colons."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
