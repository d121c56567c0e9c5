"""The per-school CA: trusted by the workstation's browsers so intercepted pages
(search SafeSearch, block pages on HTTPS) show without warnings.

The school CA's key stays on the server.  The proxy signs with this seat's own
*subordinate* CA (`GET /api/v1/ca` → `{cert_pem, key_pem, root_pem, expires_at}`): a
key of its own, valid a week, name-constrained away from ISUO and the passed-through
hosts; the agent fetches a new one before it expires (`proxy_ca_due`).  The subordinate
key stays with the proxy (its confdir, mode 0600, with the subordinate and school CA
certificates after it: the chain mitmproxy sends); the school CA certificate (`root_pem`)
goes to:

* the system store: `/usr/local/share/ca-certificates/kalkan-school-ca.crt` +
  `update-ca-certificates` (curl, wget, apt, Python, …);
* Firefox: the enterprise policy `/etc/firefox/policies/policies.json`
  (`Certificates.Install`), merged into any policy already there;
* Chromium: each user's NSS database (`~/.pki/nssdb`, and `/etc/skel` for new
  users) with `certutil` (Debian package libnss3-tools).

Every function takes a `root` (default `/`) so tests run them against a temp tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the agent process imports this module; cryptography loads only when used (+7.7 MB)
    from cryptography import x509

CA_NAME = "kalkan-school-ca"
NSS_NICKNAME = "Kalkan school CA"
SYSTEM_CA = Path("usr/local/share/ca-certificates") / f"{CA_NAME}.crt"
FIREFOX_POLICY = Path("etc/firefox/policies/policies.json")
FIREFOX_CERT = Path("etc/firefox/policies") / f"{CA_NAME}.pem"
MITMPROXY_CA_FILE = "mitmproxy-ca.pem"
SCHOOL_CA_MARK = "kalkan-school-ca.pem"  # beside it: tells the school CA from one mitmproxy made


class CaError(RuntimeError):
    pass


def check_ca(cert_pem: str, key_pem: str | None = None) -> x509.Certificate:
    """Parse and sanity-check the school CA; a clear error names what is wrong."""
    from cryptography import x509
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise CaError(f"the school CA certificate is not a PEM certificate ({exc}); "
                      "fetch it again from the server (GET /api/v1/ca)") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError("the school CA certificate is not a CA (basicConstraints CA:TRUE missing); "
                      "the server must make a CA certificate")
    if key_pem is not None:
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise CaError(f"the school CA key is not an unencrypted PEM private key ({exc})") from None
        if key.public_key().public_numbers() != cert.public_key().public_numbers():
            raise CaError("the school CA key does not belong to its certificate; fetch both again")
    return cert


def write_proxy_ca(confdir: Path, cert_pem: str, key_pem: str, *, owner_uid: int | None = None,
                   root_pem: str | None = None, expires_at: str | None = None) -> Path:
    """mitmproxy reads its CA from `<confdir>/mitmproxy-ca.pem`: the key, then the signing
    certificate, then (for a seat's subordinate CA) the school CA: mitmproxy sends every
    certificate after the first as the chain.  `root_pem` is the school CA the browsers
    trust (the signing certificate itself when it is the root); `expires_at` (ISO) is when
    the signing certificate ends, kept in `CA_META` so the agent renews it without loading
    `cryptography`."""
    check_ca(cert_pem, key_pem)
    root_pem = (root_pem or cert_pem).strip()
    chain = [cert_pem.strip()] + ([root_pem] if root_pem != cert_pem.strip() else [])
    confdir.mkdir(parents=True, exist_ok=True)
    target = confdir / MITMPROXY_CA_FILE
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key_pem.strip() + "\n" + "\n".join(chain) + "\n")
    if owner_uid is not None:
        os.chown(tmp, owner_uid, -1)
        os.chown(confdir, owner_uid, -1)
    os.replace(tmp, target)
    # mitmproxy also wants the bare certificate beside it for its own "cert" download page:
    # the one to trust, the school CA
    (confdir / "mitmproxy-ca-cert.pem").write_text(root_pem + "\n")
    (confdir / SCHOOL_CA_MARK).write_text(root_pem + "\n")
    (confdir / CA_META).write_text(json.dumps({"expires_at": expires_at}) + "\n")
    return target


CA_META = "kalkan-proxy-ca.json"  # {"expires_at": ISO or null}: when the proxy's CA must be renewed
RENEW_BEFORE_S = 2 * 24 * 3600


def proxy_ca_due(confdir: Path, now: float | None = None) -> float:
    """Seconds until the proxy's CA must be fetched again (0: now): no CA yet, or its
    subordinate CA ends within `RENEW_BEFORE_S`.  Pure file reads, no `cryptography`."""
    import time
    from datetime import datetime

    if not (confdir / SCHOOL_CA_MARK).exists():
        return 0.0
    try:
        expires_at = json.loads((confdir / CA_META).read_text()).get("expires_at")
    except (OSError, ValueError, AttributeError):
        return 0.0  # a CA from before subordinate CAs (the school CA's own key): replace it
    if not expires_at:
        return 0.0
    try:
        ends = datetime.fromisoformat(expires_at).timestamp()
    except (TypeError, ValueError):
        return 0.0
    now = time.time() if now is None else now
    return max(0.0, ends - RENEW_BEFORE_S - now)


# --------------------------------------------------------------------------- system store


def install_system_ca(cert_pem: str, root: Path = Path("/"), *, update: bool = True) -> Path:
    check_ca(cert_pem)
    target = root / SYSTEM_CA
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(cert_pem.strip() + "\n")
    target.chmod(0o644)
    if update:
        _update_ca_certificates(root)
    return target


def remove_system_ca(root: Path = Path("/"), *, update: bool = True) -> bool:
    target = root / SYSTEM_CA
    if not target.exists():
        return False
    target.unlink()
    if update:
        _update_ca_certificates(root, fresh=True)
    return True


def _update_ca_certificates(root: Path, *, fresh: bool = False) -> None:
    tool = shutil.which("update-ca-certificates")
    if tool is None:
        raise CaError("update-ca-certificates is missing; install the Debian package ca-certificates")
    args = [tool]
    if fresh:
        args.append("--fresh")
    if root != Path("/"):
        # the same tool, pointed at the temp tree (tests): every directory it touches
        etc_certs = root / "etc/ssl/certs"
        etc_certs.mkdir(parents=True, exist_ok=True)
        (root / "etc/ca-certificates/update.d").mkdir(parents=True, exist_ok=True)
        conf = root / "etc/ca-certificates.conf"
        if not conf.exists():
            conf.write_text("")
        (root / "usr/share/ca-certificates").mkdir(parents=True, exist_ok=True)
        args += ["--certsconf", str(conf), "--certsdir", str(root / "usr/share/ca-certificates"),
                 "--localcertsdir", str(root / "usr/local/share/ca-certificates"),
                 "--etccertsdir", str(etc_certs), "--hooksdir", str(root / "etc/ca-certificates/update.d")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise CaError(f"update-ca-certificates failed: {result.stderr.strip() or result.stdout.strip()}")


# --------------------------------------------------------------------------- Firefox


def install_firefox_policy(cert_pem: str, root: Path = Path("/")) -> Path:
    """Add the CA to Firefox's enterprise policy, keeping every other policy there."""
    check_ca(cert_pem)
    cert_file = root / FIREFOX_CERT
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_text(cert_pem.strip() + "\n")
    policy_file = root / FIREFOX_POLICY
    document = _read_policy(policy_file)
    certificates = document.setdefault("policies", {}).setdefault("Certificates", {})
    install = certificates.setdefault("Install", [])
    installed_path = "/" + str(FIREFOX_CERT)
    if installed_path not in install:
        install.append(installed_path)
    policy_file.write_text(json.dumps(document, indent=2) + "\n")
    return policy_file


def remove_firefox_policy(root: Path = Path("/")) -> bool:
    policy_file = root / FIREFOX_POLICY
    (root / FIREFOX_CERT).unlink(missing_ok=True)
    if not policy_file.exists():
        return False
    document = _read_policy(policy_file)
    certificates = document.get("policies", {}).get("Certificates", {})
    install = certificates.get("Install", [])
    installed_path = "/" + str(FIREFOX_CERT)
    if installed_path not in install:
        return False
    install.remove(installed_path)
    if not install:
        certificates.pop("Install")
    if not certificates:
        document["policies"].pop("Certificates")
    policy_file.write_text(json.dumps(document, indent=2) + "\n")
    return True


def _read_policy(policy_file: Path) -> dict:
    if not policy_file.exists():
        return {}
    try:
        document = json.loads(policy_file.read_text() or "{}")
    except json.JSONDecodeError as exc:
        raise CaError(f"{policy_file} is not valid JSON ({exc}); fix or remove it, "
                      "then install again") from None
    if not isinstance(document, dict):
        raise CaError(f"{policy_file} must hold a JSON object with a 'policies' key")
    return document


# --------------------------------------------------------------------------- Chromium (NSS)


def _certutil() -> str:
    tool = shutil.which("certutil")
    if tool is None:
        raise CaError("certutil is missing; install the Debian package libnss3-tools")
    return tool


def install_nss(cert_pem: str, db_dir: Path, *, owner: tuple[int, int] | None = None) -> None:
    """Trust the CA for websites in one NSS database (created if missing)."""
    check_ca(cert_pem)
    db_dir.mkdir(parents=True, exist_ok=True)
    certutil = _certutil()
    if not (db_dir / "cert9.db").exists():
        _run([certutil, "-N", "-d", f"sql:{db_dir}", "--empty-password"])
    pem = db_dir / f"{CA_NAME}.pem"
    pem.write_text(cert_pem)
    try:
        _run([certutil, "-A", "-d", f"sql:{db_dir}", "-n", NSS_NICKNAME, "-t", "C,,", "-i", str(pem)])
    finally:
        pem.unlink(missing_ok=True)
    if owner is not None:
        for path in [db_dir, *db_dir.iterdir()]:
            os.chown(path, *owner)


def remove_nss(db_dir: Path) -> bool:
    if not (db_dir / "cert9.db").exists():
        return False
    result = subprocess.run([_certutil(), "-D", "-d", f"sql:{db_dir}", "-n", NSS_NICKNAME],
                            capture_output=True, text=True, timeout=60)
    return result.returncode == 0


def nss_trusts(db_dir: Path) -> bool:
    result = subprocess.run([_certutil(), "-L", "-d", f"sql:{db_dir}", "-n", NSS_NICKNAME],
                            capture_output=True, text=True, timeout=60)
    return result.returncode == 0


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise CaError(f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")


def user_nss_dbs(root: Path = Path("/")) -> list[tuple[Path, tuple[int, int] | None]]:
    """Every person's Chromium NSS db (/home/*/.pki/nssdb) and /etc/skel's, with owners."""
    found: list[tuple[Path, tuple[int, int] | None]] = [(root / "etc/skel/.pki/nssdb", None)]
    home = root / "home"
    if home.is_dir():
        for user_home in sorted(home.iterdir()):
            if user_home.is_dir():
                stat = user_home.stat()
                found.append((user_home / ".pki/nssdb", (stat.st_uid, stat.st_gid)))
    return found


# --------------------------------------------------------------------------- all together


@dataclass
class CaInstallReport:
    system: Path | None = None
    firefox: Path | None = None
    nss: list[Path] = field(default_factory=list)


def install_everywhere(cert_pem: str, root: Path = Path("/")) -> CaInstallReport:
    report = CaInstallReport()
    report.system = install_system_ca(cert_pem, root)
    report.firefox = install_firefox_policy(cert_pem, root)
    for db_dir, owner in user_nss_dbs(root):
        install_nss(cert_pem, db_dir, owner=owner)
        report.nss.append(db_dir)
    return report


def remove_everywhere(root: Path = Path("/")) -> None:
    remove_system_ca(root)
    remove_firefox_policy(root)
    for db_dir, _ in user_nss_dbs(root):
        remove_nss(db_dir)
