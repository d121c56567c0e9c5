"""A throwaway PostgreSQL cluster for tests, from the machine's own `postgresql` binaries.

    from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)

    def test_something(postgres_url):            # "postgresql+psycopg://kalkan@127.0.0.1:PORT/kalkan"
        ...

    def test_other(postgres_cluster):
        url = postgres_cluster.create_database()  # a fresh, empty database of its own

* `postgres_cluster` (session scope): `initdb` + `pg_ctl start` in a temp dir, listening only
  on 127.0.0.1 (a free port) and a unix socket in that dir, trust authentication, superuser
  `kalkan`.  When the tests run as root (CI), the cluster runs as `nobody` through `runuser`
  (PostgreSQL refuses to run as root).  Stopped (`pg_ctl stop -m immediate`) and deleted at
  the end of the session.
* `.pause()` / `.resume()`: the database server down and up again, data kept, for tests of
  what the server does while its database is gone.
* `postgres_url` (session scope): the URL of the database `kalkan` in that cluster.

Fails (not skips) with a clear message when the binaries are missing: PostgreSQL is a
required part of the test set-up (`install/apt-packages.txt`).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN_AS = "nobody"


def find_pg_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        pytest.fail("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: "
                    "apt-get install postgresql (see install/apt-packages.txt)")
    return Path(candidates[0]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    def __init__(self, *, listen: tuple[str, ...] = ("127.0.0.1",),
                 trust_networks: tuple[str, ...] = ()) -> None:
        """`listen`/`trust_networks`: more addresses to listen on and networks (CIDR) allowed
        in with trust, for servers in network namespaces (tests/support/replicas.py)."""
        self.listen = listen
        self.trust_networks = trust_networks
        self.bin = find_pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="kalkan-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "kalkan"
        self.as_root = os.geteuid() == 0

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        full = list(cmd)
        if self.as_root:
            full = ["runuser", "-u", RUN_AS, "--", *full]
        return subprocess.run(full, check=check, capture_output=True, text=True, cwd=self.root)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.root, RUN_AS)
            os.chmod(self.root, 0o700)
        result = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                           "-E", "UTF8", "--no-sync", check=False)
        if result.returncode:
            raise RuntimeError(f"initdb failed: {result.stderr or result.stdout}")
        if self.trust_networks:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {net} trust\n" for net in self.trust_networks)
        self._pg_start()
        self.create_database("kalkan")

    def _pg_start(self) -> None:
        options = (f"-c listen_addresses={','.join(self.listen)} -c port={self.port} "
                   f"-c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                           "-o", options, "-w", "-t", "60", "start", check=False)
        if result.returncode:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr or result.stdout}\n{log}")

    def pause(self) -> None:
        """Stop the server, keeping its data: `resume()`.  `-m fast` (connections cut at once),
        not `immediate`: the test cluster runs with synchronous_commit=off, so a crash would
        lose commits a real server keeps."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._pg_start()

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop",
                  check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "kalkan") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.url("kalkan")
