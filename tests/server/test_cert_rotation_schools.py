"""The certificate rotation on a many-schools service (policy_server/tenancy, SQLite schools):
the next certificate names a school added after the service first made its certificate, a
browser-style name check at that school's host passes after `activate` + restart (and fails
before), and `tls status` counts the seats of every school's database."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policy_server.settings import Settings
from tests.support.server import REPO, free_port


def cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_server.cli", "--lang", "en", *args,
                           "--state-dir", str(state_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


class Service:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.state_dir / "server.log", "ab")  # noqa: SIM115  (the child keeps it)
        env = {**os.environ, "PYTHONPATH": str(REPO), "KALKAN_CHECKS_FIRST_DELAY_S": "600"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "policy_server.cli", "run", "--state-dir", str(self.state_dir), "--host",
             "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.state_dir / "server.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the service did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def get_as_browser(self, host: str) -> str:
        """GET /healthz at `host` (resolved to 127.0.0.1) with the certificate trusted and its
        names checked, as a browser that trusts it would; returns the status line."""
        context = ssl.create_default_context(cafile=str(self.state_dir / "tls" / "server.crt"))
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{self.port}\r\nConnection: close\r\n\r\n"
                            .encode())
                return tls.recv(200).decode(errors="replace").split("\r\n")[0]


def add_seat(service: Settings, slug: str, seat: str, *, pins: list[str], seen: datetime | None) -> None:
    from policy_server.agents.service import create_enrollment_code, enroll, parse_expiry
    from policy_server.db.models import Workstation
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.protocol import EnrollRequest
    from policy_server.school.service import ensure_room
    from policy_server.tenancy.schools import find, school_settings

    engine = make_engine(school_settings(service, find(service, slug)).database_url)
    try:
        with make_sessionmaker(engine)() as db:
            ensure_room(db, name="lab-1", actor="test")
            code = create_enrollment_code(db, actor="test", room="lab-1", uses=1,
                                          expires_at=parse_expiry("1d"))
            answer = enroll(db, EnrollRequest(code=code, hostname=seat, seat=seat))
            ws = db.get(Workstation, answer.agent_id)
            ws.last_seen_at = seen
            ws.health = {"agent_version": "1", "tls_pins": pins}
            db.commit()
    finally:
        engine.dispose()


def test_the_next_certificate_names_a_school_added_later_and_status_counts_every_school(tmp_path):
    from policy_server.tenancy.schools import add_school
    from policy_server.tls import cert_names

    settings = Settings(state_dir=tmp_path / "service")
    add_school(settings, slug="school-a", name="A", hosts=["a.district.test"])
    service = Service(settings.state_dir)
    service.start()
    try:
        assert service.get_as_browser("a.district.test").startswith("HTTP/1.1 200")
        added = cli(settings.state_dir, "schools", "add", "school-b", "--host", "b.district.test")
        assert added.returncode == 0, added.stderr
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            service.get_as_browser("b.district.test")  # the warning a browser shows today

        made = cli(settings.state_dir, "tls", "rotate", "--name", "kalkan.district.test", "--json")
        assert made.returncode == 0, made.stderr
        body = json.loads(made.stdout)
        names = set(body["names"])
        assert {"a.district.test", "b.district.test", "kalkan.district.test", "localhost"} <= names
        dns, ips = cert_names(settings.state_dir / "tls" / "server.next.crt")
        assert "b.district.test" in dns and "127.0.0.1" in ips
        served, _ = cert_names(settings.cert_path)
        assert "b.district.test" not in served

        now = datetime.now(UTC)
        add_seat(settings, "school-a", "a-01", pins=[body["served"], body["next"]], seen=now)
        add_seat(settings, "school-b", "b-01", pins=[body["served"]], seen=now - timedelta(hours=1))
        add_seat(settings, "school-b", "b-02", pins=[body["served"]], seen=now - timedelta(days=40))
        status = json.loads(cli(settings.state_dir, "tls", "status", "--json").stdout)
        assert [(s["school"], s["seat"]) for s in status["ready"]] == [("school-a", "a-01")]
        assert [(s["school"], s["seat"]) for s in status["waiting"]] == [("school-b", "b-01")]
        assert [(s["school"], s["seat"]) for s in status["absent"]] == [("school-b", "b-02")]
        text = cli(settings.state_dir, "tls", "status").stdout
        assert "seats holding the next certificate: 1 of 3" in text and "school-b/b-01 (room lab-1" in text

        refused = cli(settings.state_dir, "tls", "activate")
        assert refused.returncode == 2 and "b-01" in refused.stderr and "b-02" not in refused.stderr
        done = cli(settings.state_dir, "tls", "activate", "--force")
        assert done.returncode == 0, done.stderr
        service.stop()
        service.start()
        assert service.get_as_browser("b.district.test").startswith("HTTP/1.1 200")
        assert service.get_as_browser("a.district.test").startswith("HTTP/1.1 200")
    finally:
        service.stop()
