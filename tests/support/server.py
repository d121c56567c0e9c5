"""A real `kalkan-server run` in a subprocess, for tests of every area.

    from tests.support.server import KalkanServerProcess

    def test_it(tmp_path):
        with KalkanServerProcess(tmp_path / "server") as server:      # starts; stops at the end
            code = server.make_enrollment_code(room="lab-1", uses=5)  # room created if missing
            agent_id, token = server.enroll("pc-01", seat="seat-1")   # or let your agent enroll
            with server.agent_client(token) as agent:                 # httpx.Client, Bearer, pinned TLS
                agent.post("/api/v1/events", json={"events": [...]})
            server.create_user("admin", "boss", "long-password")
            with server.login("boss", "long-password") as admin:      # cookie + X-CSRF-Token header
                admin.get("/api/v1/incidents").json()
            server.restart()                                         # same state dir, same port

* `KalkanServerProcess(state_dir, db_url=None, tls=True, port=None)`: SQLite in `state_dir`
  unless `db_url` (e.g. the `postgres_url` fixture of tests/support/postgres.py) is given.
* `.url` ("https://127.0.0.1:PORT"), `.fingerprint` (SHA-256 hex of the server certificate,
  what `kalkan-agent enroll --fingerprint` expects), `.cert_path`, `.verify` (an
  `ssl.SSLContext` trusting exactly that certificate, for httpx `verify=`).
* `.start()` waits for `/healthz`; `.stop()` (SIGTERM), `.kill()` (SIGKILL), `.restart()`.
* `.make_enrollment_code(room=None, uses=1, expires="7d")`, `.create_user(role, username,
  password)`, `.login(username, password) -> httpx.Client`, `.enroll(hostname, seat=None)`,
  `.agent_client(token)`, `.amend_policy(comment, change)` (a function PolicyBundle →
  PolicyBundle), `.db()` (a SQLAlchemy session on the server's database, for assertions).
The server's output goes to `state_dir/server.log` (shown in the error when it fails to start).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KalkanServerProcess:
    def __init__(self, state_dir: Path | str, db_url: str | None = None, *, tls: bool = True,
                 port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.extra_env = dict(env or {})
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.tls = tls
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._engine = None
        self._sessionmaker = None

    # ------------------------------------------------------------------ process

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> Path:
        return self.state_dir / "tls" / "server.crt"

    @property
    def fingerprint(self) -> str:
        from policy_server.tls import cert_fingerprint

        return cert_fingerprint(self.cert_path)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        if not self.tls:
            return False
        context = ssl.create_default_context(cafile=str(self.cert_path))
        return context

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "policy_server.cli", "run", "--state-dir", str(self.state_dir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        if self.db_url:
            cmd += ["--db", self.db_url]
        if not self.tls:
            cmd.append("--no-tls")
        return cmd

    def start(self) -> KalkanServerProcess:
        if self.proc and self.proc.poll() is None:
            return self
        log = open(self.state_dir / "server.log", "ab")  # noqa: SIM115  (the child keeps it)
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **self.extra_env}
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kalkan-server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if self.cert_path.exists() or not self.tls:
                    r = httpx.get(self.url + "/healthz", verify=self.verify, timeout=2)
                    if r.status_code == 200:
                        return self
            except (httpx.HTTPError, ssl.SSLError, OSError):
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            f"kalkan-server did not answer /healthz within {START_TIMEOUT_S}s:\n{self.log_text()}")

    def log_text(self) -> str:
        path = self.state_dir / "server.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dispose()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._dispose()

    def restart(self) -> KalkanServerProcess:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def __enter__(self) -> KalkanServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ database

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._sessionmaker = None

    def db(self):
        """A session on the server's database (the server has migrated it)."""
        if self._sessionmaker is None:
            from policy_server.db.session import make_engine, make_sessionmaker

            url = self.db_url or f"sqlite:///{self.state_dir / 'kalkan.sqlite'}"
            self._engine = make_engine(url)
            self._sessionmaker = make_sessionmaker(self._engine)
        return self._sessionmaker()

    def make_enrollment_code(self, room: str | None = None, uses: int = 1, expires: str = "7d") -> str:
        from policy_server.agents.service import create_enrollment_code, parse_expiry
        from policy_server.school.service import ensure_room, ensure_school, get_school

        with self.db() as db:
            if room:
                if get_school(db) is None:
                    ensure_school(db, name="Test School", actor="test")
                ensure_room(db, name=room, actor="test")
            code = create_enrollment_code(db, actor="test", room=room, uses=uses,
                                          expires_at=parse_expiry(expires))
            db.commit()
        return code

    def create_user(self, role: str, username: str, password: str, **extra) -> int:
        from policy_server.people.service import create_person

        with self.db() as db:
            person = create_person(db, username=username, role=role, password=password, actor="test", **extra)
            db.commit()
            return person.id

    def amend_policy(self, comment: str, change: Callable) -> int:
        """Change the policy from outside the server process; the server pushes it within ~2 s."""
        from policy_server.policies.service import amend_policy

        with self.db() as db:
            bundle = amend_policy(db, actor="test", comment=comment, change=change)
            db.commit()
            return bundle.version

    # ------------------------------------------------------------------ clients

    def client(self, **kwargs) -> httpx.Client:
        timeout = kwargs.pop("timeout", 30)
        return httpx.Client(base_url=self.url, verify=self.verify, timeout=timeout, **kwargs)

    def login(self, username: str, password: str) -> httpx.Client:
        """A client logged in through `POST /api/v1/login`, sending the CSRF header on every request."""
        with self.client() as first:  # a fresh client is returned, so that `with server.login(…)` works
            r = first.post("/api/v1/login", json={"username": username, "password": password})
            if r.status_code != 200:
                raise RuntimeError(f"login as {username!r} failed: {r.status_code} {r.text}")
            cookies = dict(first.cookies)
        return self.client(cookies=cookies, headers={"X-CSRF-Token": r.json()["csrf_token"]})

    def enroll(self, hostname: str = "pc-01", seat: str | None = None,
               room: str | None = None) -> tuple[str, str]:
        """Enrol a pretend agent; returns (agent_id, token)."""
        code = self.make_enrollment_code(room=room)
        with self.client() as c:
            r = c.post("/api/v1/enroll", json={"code": code, "hostname": hostname, "seat": seat})
            r.raise_for_status()
            body = r.json()
        return body["agent_id"], body["token"]

    def agent_client(self, token: str) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {token}"})
