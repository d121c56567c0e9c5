"""A real clamd for tests and benchmarks, with Kalkan's test signatures.

`build_signature_db` packs `tests/fixtures/clamav/kalkantest.{ndb,hdb}` into an
unsigned ClamAV container (`.cud`, what `sigtool --build --unsigned` writes) with
a chosen build date and version, so clamd's VERSION answer carries a signature
version and date like the official `daily.cvd` does (clamd refuses to start
without any database).  `ClamdProcess` starts `/usr/sbin/clamd` in the
foreground with its own configuration and unix socket in a temporary folder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import socket
import subprocess
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIGNATURE_SOURCES = REPO / "tests" / "fixtures" / "clamav"
CLAMD = Path("/usr/sbin/clamd")
TESTFILES = Path("/usr/share/clamav-testfiles")
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DB_NAME = "kalkantest"
CONTAINER_NAME = "daily"  # clamd takes the signature version and date only from "daily.*"


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_signature_db(dest_dir: Path, *, built_at: datetime | None = None, version: int = 424242) -> Path:
    """Write `<dest_dir>/kalkantest.cud` and return its path."""
    built_at = (built_at or datetime.now(UTC)).astimezone(UTC)
    files = {f"{DB_NAME}.{ext}": (SIGNATURE_SOURCES / f"{DB_NAME}.{ext}").read_bytes()
             for ext in ("hdb", "ndb")}
    sigs = sum(len([line for line in data.splitlines() if line.strip()]) for data in files.values())
    stamp = built_at.strftime("%d %b %Y %H-%M +0000")
    head = f"ClamAV-VDB:{stamp}:{version}:{sigs}:90:X:X:kalkan-tests:{int(built_at.timestamp())}"
    info = head + "\n" + "".join(
        f"{name}:{len(data)}:{hashlib.sha256(data).hexdigest()}\n" for name, data in files.items()
    )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _tar_member(tar, "COPYING", b"Kalkan test signatures, for tests only.\n")
        _tar_member(tar, f"{DB_NAME}.info", info.encode())
        for name, data in files.items():
            _tar_member(tar, name, data)
    body = gzip.compress(raw.getvalue(), mtime=0)
    header = f"ClamAV-VDB:{stamp}:{version}:{sigs}:90:{hashlib.md5(body).hexdigest()}:X:kalkan-tests:" \
             f"{int(built_at.timestamp())}".encode().ljust(512, b" ")
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{CONTAINER_NAME}.cud"
    path.write_bytes(header + body)
    return path


class ClamdProcess:
    """A foreground clamd with its own config, socket and database folder."""

    def __init__(self, workdir: Path, *, built_at: datetime | None = None, max_threads: int = 4,
                 version: int = 424242) -> None:
        self.workdir = workdir
        self.db_dir = workdir / "db"
        self.socket_path = workdir / "clamd.sock"
        self.log_path = workdir / "clamd.log"
        self.config_path = workdir / "clamd.conf"
        self.max_threads = max_threads
        self.built_at = built_at
        self.version = version
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        build_signature_db(self.db_dir, built_at=self.built_at, version=self.version)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self.config_path.write_text(
            "\n".join([
                "Foreground yes",
                f"LocalSocket {self.socket_path}",
                "LocalSocketMode 660",
                f"DatabaseDirectory {self.db_dir}",
                f"TemporaryDirectory {self.workdir / 'tmp'}",
                f"LogFile {self.log_path}",
                f"MaxThreads {self.max_threads}",
                "MaxQueue 200",
                "SelfCheck 0",
                "ScanArchive yes",
                "ExitOnOOM yes",
                "",
            ])
        )

    def start(self, timeout: float = 30.0) -> ClamdProcess:
        if not CLAMD.exists():
            raise RuntimeError(f"{CLAMD} is missing: apt-get install clamav-daemon")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.proc = subprocess.Popen([str(CLAMD), "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited with {self.proc.returncode}: {self._log_tail()}")
            if self._pong():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING within {timeout}s: {self._log_tail()}")

    def _pong(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(str(self.socket_path))
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Simulate a crashed clamd."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
