"""The seat's install, served by the school server (docs/operations.md "Installing a seat").

`GET /install/seat.sh` (public: it holds no secret) is a script with this server's address,
certificate fingerprint and the agent package's SHA-256 written in; it downloads
`GET /install/kalkan-agent.deb` over the same pinned connection, checks the hash, installs
the package (its Debian dependencies from the school's usual mirror, or already present),
enrols with the room's code and the seat name given on its command line, and starts the
service.  The enrolment code is never in anything the server serves: it is in the command
the responsible person copies from the console (`install_command`).

The command pins the server's public key (`curl --pinnedpubkey sha256//…`, checked even with
`-k`, which only skips the CA check a school's own certificate cannot pass), so a machine in
the middle can serve neither the script nor the package.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

PACKAGE_GLOB = "kalkan-agent_*_amd64.deb"


def pubkey_pin(cert_path: Path) -> str:
    """curl's `--pinnedpubkey` value for a certificate: `sha256//` + base64 SHA-256 of its key."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def seat_package_dir(settings) -> Path:
    return Path(getattr(settings, "seat_package_dir", None) or Path(settings.state_dir) / "packages")


def newest_package(settings) -> Path | None:
    """The agent package seats get: the newest `kalkan-agent_*_amd64.deb` in the folder."""
    folder = seat_package_dir(settings)
    if not folder.is_dir():
        return None
    return max(folder.glob(PACKAGE_GLOB), key=lambda p: (p.stat().st_mtime, p.name), default=None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_command(room: str, code: str, server_url: str, fingerprint: str, seat: str | None = None) -> str:
    """The one command the responsible person runs (as root) on each PC of `room`.

    `fingerprint` is the server's key pin, `pubkey_pin(settings.cert_path)` (`sha256//…`).
    The seat is named after the PC's host name, or `seat` when given (one command per seat)."""
    if not fingerprint.startswith("sha256//"):
        raise ValueError("fingerprint must be the public-key pin from pubkey_pin(), 'sha256//…'")
    base = server_url.rstrip("/")
    fetch = (f"curl -fsSk --pinnedpubkey {shlex.quote(fingerprint)} {shlex.quote(base + '/install/seat.sh')} "
             "-o /tmp/kalkan-seat.sh")
    name = shlex.quote(seat) if seat else '"$(hostname)"'
    run = f"sh /tmp/kalkan-seat.sh --code {shlex.quote(code)} --room {shlex.quote(room)} --seat {name}"
    return f"sudo sh -c {shlex.quote(fetch + ' && ' + run)}"


SCRIPT = r"""#!/bin/sh
# Kalkan: install, enrol and start the agent on this PC (served by the school server).
# Usage (as root): sh seat.sh --code CODE --seat NAME [--room ROOM]
set -eu
SERVER=__SERVER__
PIN=__PIN__
FINGERPRINT=__FINGERPRINT__
PACKAGE_SHA256=__SHA256__
CODE="" SEAT="" ROOM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --code) CODE=$2; shift 2 ;;
        --seat) SEAT=$2; shift 2 ;;
        --room) ROOM=$2; shift 2 ;;
        *) echo "unknown option $1 (use --code CODE --seat NAME [--room ROOM])" >&2; exit 2 ;;
    esac
done
[ -n "$CODE" ] || { echo "give the room's enrolment code: --code CODE" >&2; exit 2; }
[ -n "$SEAT" ] || SEAT=$(hostname)
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
DEB=/tmp/kalkan-agent.deb
echo "Kalkan: fetching the agent package from $SERVER (room ${ROOM:--}, seat $SEAT)"
curl -fsSk --pinnedpubkey "$PIN" "$SERVER/install/kalkan-agent.deb" -o "$DEB"
echo "$PACKAGE_SHA256  $DEB" | sha256sum -c --quiet - \
    || { echo "the package's hash is wrong: not installed" >&2; exit 1; }
if command -v apt-get >/dev/null; then
    # its Debian dependencies (clamav, nftables, ...) come from the school's usual mirror;
    # where they are installed already, nothing is fetched
    apt-get install -y --no-install-recommends "$DEB"
else
    dpkg -i "$DEB"
fi
rm -f "$DEB"
kalkan-agent enroll --server "$SERVER" --code "$CODE" --seat "$SEAT" --fingerprint "$FINGERPRINT"
# the server's apt repository of the agent, for upgrades (apt upgrade, or from the console):
# its signing key as the only keyring for it, the server's own certificate trusted for its host
install -d -m 0755 /etc/apt/keyrings
curl -fsSk --pinnedpubkey "$PIN" "$SERVER/install/kalkan-archive.gpg" -o /etc/apt/keyrings/kalkan-archive.gpg
curl -fsSk --pinnedpubkey "$PIN" "$SERVER/install/server.crt" -o /etc/apt/keyrings/kalkan-server.crt
HOST=$(echo "$SERVER" | sed -e 's|^[a-z]*://||' -e 's|^\[\([^]]*\)\].*|\1|' -e 's|[:/].*$||')
cat > /etc/apt/apt.conf.d/60kalkan <<APT
// Kalkan: the school server's apt repository (written by seat.sh; removed with kalkan-agent)
Acquire::https::$HOST::CaInfo "/etc/apt/keyrings/kalkan-server.crt";
Acquire::https::$HOST::Verify-Host "false";
APT
echo "deb [signed-by=/etc/apt/keyrings/kalkan-archive.gpg] $SERVER/install/apt ./" \
    > /etc/apt/sources.list.d/kalkan.list
if [ -d /run/systemd/system ]; then
    systemctl enable --now kalkan-agent.service
fi
echo "Kalkan agent installed, enrolled as $SEAT and started."
"""


def seat_script(*, server_url: str, pin: str, fingerprint: str, package_sha256: str) -> str:
    values = {"__SERVER__": server_url.rstrip("/"), "__PIN__": pin, "__FINGERPRINT__": fingerprint,
              "__SHA256__": package_sha256}
    text = SCRIPT
    for key, value in values.items():
        text = text.replace(key, shlex.quote(value))
    return text
