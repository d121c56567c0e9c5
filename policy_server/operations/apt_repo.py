"""A small apt repository of the agent package, served by the school server to its own seats
(docs/operations.md "Upgrading seats"), so `apt upgrade` on a seat picks up a newer agent.

A flat repository (`deb [signed-by=…] https://SERVER/install/apt ./`) made from the packages in
the seat package folder (`seat.seat_package_dir`, every version kept: a seat that fails an
upgrade goes back to the version before): `Packages`, `Packages.gz`, `Release` and `InRelease`,
the last signed with the server's own OpenPGP key (made on first use with `gpg`, kept in
`state_dir/apt/gnupg`, so a backup of the state folder keeps it).  The seat command installs the
key's public part as the repository's only keyring (`/etc/apt/keyrings/kalkan-archive.gpg`).

`ensure_repo(settings)` rebuilds the index when the folder changed (names, sizes, times): the
first request after a package is copied in brings it into the index; nothing to run by hand.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

from policy_server.errors import KalkanError
from policy_server.operations.seat import PACKAGE_GLOB, seat_package_dir

KEY_NAME = "Kalkan school server (agent packages)"
KEYRING_FILE = "kalkan-archive.gpg"
INDEX_FILES = ("InRelease", "Release", "Release.gpg", "Packages", "Packages.gz")
_lock = threading.Lock()


class RepoError(KalkanError):
    """The repository cannot be made (no gpg, a broken package file): 503, said plainly."""

    status_code = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, code="install.repo_unavailable")


def repo_dir(settings) -> Path:
    return Path(settings.state_dir) / "apt" / "repo"


def _gnupg_home(settings) -> Path:
    return Path(settings.state_dir) / "apt" / "gnupg"


def _gpg(settings, *args: str, input: bytes | None = None) -> bytes:
    home = _gnupg_home(settings)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    if shutil.which("gpg") is None:
        raise RepoError("gpg is missing: apt-get install gpg (the kalkan-server package depends on it)")
    result = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args],
                            input=input, capture_output=True, timeout=60)
    if result.returncode:
        raise RepoError(f"gpg {' '.join(args[:2])} failed: {result.stderr.decode(errors='replace')[-500:]}")
    return result.stdout


def _stop_agent(settings) -> None:
    """gpg leaves a gpg-agent running for the key; the server signs rarely, so it goes at once."""
    if shutil.which("gpgconf"):
        subprocess.run(["gpgconf", "--homedir", str(_gnupg_home(settings)), "--kill", "gpg-agent"],
                       capture_output=True, timeout=30)


def ensure_key(settings) -> None:
    if not _gpg(settings, "--list-secret-keys", "--with-colons").strip():
        _gpg(settings, "--passphrase", "", "--quick-generate-key", KEY_NAME, "ed25519", "sign", "never")


def public_keyring(settings) -> bytes:
    """The signing key's public part, binary (what apt's `signed-by=` reads)."""
    with _lock:
        try:
            ensure_key(settings)
            return _gpg(settings, "--export", KEY_NAME)
        finally:
            _stop_agent(settings)


def _control(deb: Path) -> str:
    result = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, timeout=60)
    if result.returncode:
        raise RepoError(f"{deb.name} is not a Debian package: {result.stderr.strip()[-300:]}")
    return result.stdout.rstrip("\n")


def _digests(path: Path) -> tuple[int, str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
            size += len(block)
    return size, md5.hexdigest(), sha256.hexdigest()


def _stamp(packages: list[Path]) -> str:
    return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in packages])


def packages(settings) -> list[Path]:
    folder = seat_package_dir(settings)
    return sorted(folder.glob(PACKAGE_GLOB)) if folder.is_dir() else []


def ensure_repo(settings) -> Path:
    """The repository folder, its index rebuilt if the package folder changed since."""
    debs = packages(settings)
    out = repo_dir(settings)
    stamp = _stamp(debs)
    with _lock:
        stamp_file = out / ".stamp"
        if stamp_file.exists() and stamp_file.read_text() == stamp and (out / "InRelease").exists():
            return out
        try:
            return _build(settings, debs, out, stamp)
        finally:
            _stop_agent(settings)


def _build(settings, debs: list[Path], out: Path, stamp: str) -> Path:
    ensure_key(settings)
    build = out.with_name("repo.new")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    stanzas = []
    for deb in debs:
        size, md5, sha256 = _digests(deb)
        stanzas.append(f"{_control(deb)}\nFilename: ./{deb.name}\nSize: {size}\nMD5sum: {md5}\n"
                       f"SHA256: {sha256}\n")
    text = "\n".join(stanzas).encode()
    (build / "Packages").write_bytes(text)
    (build / "Packages.gz").write_bytes(gzip.compress(text, mtime=0))
    lines = ["Origin: Kalkan", "Label: Kalkan school server", "Suite: kalkan", "Codename: kalkan",
             f"Date: {email.utils.formatdate(usegmt=True)}", "Architectures: amd64 all",
             "Description: the Kalkan agent for this school's seats", "MD5Sum:"]
    index = [(n, *_digests(build / n)) for n in ("Packages", "Packages.gz")]
    lines += [f" {md5} {size:>16} {name}" for name, size, md5, _ in index]
    lines.append("SHA256:")
    lines += [f" {sha} {size:>16} {name}" for name, size, _, sha in index]
    release = ("\n".join(lines) + "\n").encode()
    (build / "Release").write_bytes(release)
    sign = ("--local-user", KEY_NAME, "--digest-algo", "SHA256", "--output", "-")
    (build / "InRelease").write_bytes(_gpg(settings, *sign, "--clearsign", input=release))
    (build / "Release.gpg").write_bytes(_gpg(settings, *sign, "--armor", "--detach-sign", input=release))
    (build / ".stamp").write_text(stamp)
    old = out.with_name("repo.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    build.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def versions(settings) -> list[str]:
    """The agent versions the repository offers (from the file names), oldest first by dpkg's order."""
    found = [p.name.split("_")[1] for p in packages(settings)]
    return sorted(found, key=_dpkg_key)


def _dpkg_key(version: str):
    import functools

    def cmp(a: str, b: str) -> int:
        if a == b:
            return 0
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        return -1 if lt else 1

    return functools.cmp_to_key(cmp)(version)
