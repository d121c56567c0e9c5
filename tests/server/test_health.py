"""Honest health and calm recovery, with real servers: `/healthz` says whether the database
can write; a full disk or a database that is gone is a typed 503 with Retry-After and one
short log line; SIGTERM ends push streams first and exits at once without ERROR lines."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from policy_server import protocol
from tests.support.postgres import PostgresCluster
from tests.support.server import KalkanServerProcess


def _events(n: int) -> dict:
    return {"events": [protocol.make_event("web.report", {"url": f"http://x.example/{i}"})
                       .model_dump(mode="json") for i in range(n)]}


def test_healthz_reports_a_real_write(api):
    r = api.client.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] in ("ok", "degraded") and body["database"]["writable"] is True
    assert body["disk"]["free_bytes"] > 0 and r.headers["cache-control"] == "no-store"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs for the server's state (the SQLite database): fillable on purpose."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root (as CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    return filler


def test_full_disk_is_a_typed_503_and_health_says_so_then_recovers(small_disk):
    with KalkanServerProcess(small_disk / "server") as server:
        _, token = server.enroll("pc-01", seat="seat-1")
        with server.agent_client(token) as agent:
            filler = _fill(small_disk)
            time.sleep(1.1)  # the health result is kept a second
            health = agent.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"
            assert health.json()["database"]["writable"] is False
            assert health.json()["disk"]["state"] == "full"
            batch = _events(500)
            for _ in range(5):
                r = agent.post("/api/v1/events", json=batch)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "5" and r.json()["code"] == "server.unavailable"
                assert "disk is full" in r.json()["detail"]
            filler.unlink()
            time.sleep(1.1)
            assert agent.get("/healthz").status_code == 200
            r = agent.post("/api/v1/events", json=batch)
            assert r.status_code == 200 and len(r.json()["accepted"]) == 500
        log = server.log_text()
    assert "Traceback" not in log and "ERROR" not in log
    assert log.count("database unavailable") == 1  # one short line, not one per request


@pytest.mark.postgres
def test_database_gone_is_a_typed_503_and_health_says_so_then_recovers(tmp_path):
    cluster = PostgresCluster()  # its own: this test stops it
    cluster.start()
    try:
        with KalkanServerProcess(tmp_path / "server", db_url=cluster.create_database()) as server:
            _, token = server.enroll("pc-01", seat="seat-1")
            batch = _events(50)
            cluster.pause()
            time.sleep(1.1)
            with server.agent_client(token) as agent:
                health = agent.get("/healthz")
                assert health.status_code == 503 and health.json()["database"]["writable"] is False
                r = agent.post("/api/v1/events", json=batch)
                # the token is checked in the database too: whichever query meets it first
                assert r.status_code == 503 and r.json()["code"] == "server.unavailable"
                assert r.headers["retry-after"] == "5"
            cluster.resume()
            deadline = time.monotonic() + 20
            with server.agent_client(token) as agent:
                while agent.get("/healthz").status_code != 200 and time.monotonic() < deadline:
                    time.sleep(0.2)
                r = agent.post("/api/v1/events", json=batch)
                assert r.status_code == 200 and len(r.json()["accepted"]) == 50
            log = server.log_text()
        assert "Traceback" not in log and "ERROR" not in log
    finally:
        cluster.stop()


def _stop_with_streams_open(server: KalkanServerProcess, token: str) -> float:
    """Open push streams and an idle keep-alive connection, SIGTERM: seconds until exit."""
    connected = threading.Barrier(4, timeout=20)

    def listen():
        with server.agent_client(token) as c, c.stream("GET", "/api/v1/policy/stream", timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("retry:"):
                    connected.wait()

    threads = [threading.Thread(target=listen, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    idle = server.agent_client(token)
    assert idle.get("/healthz").status_code == 200  # kept alive, never closed by us
    connected.wait()
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(20)
    took = time.monotonic() - started
    idle.close()
    return took


def test_sigterm_closes_push_streams_first_and_exits_quietly(tmp_path):
    server = KalkanServerProcess(tmp_path / "server").start()
    _, token = server.enroll("pc-01", seat="seat-1")
    took = _stop_with_streams_open(server, token)
    server.stop()
    assert took < 2.0, f"SIGTERM took {took:.1f} s (the graceful timeout is 3 s)"
    log = server.log_text()
    assert "ERROR" not in log and "Traceback" not in log, log


@pytest.mark.postgres
def test_sigterm_with_two_workers_exits_quietly(postgres_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("KALKAN_WORKERS", "2")
    server = KalkanServerProcess(tmp_path / "server", db_url=postgres_cluster.create_database()).start()
    _, token = server.enroll("pc-01", seat="seat-1")
    took = _stop_with_streams_open(server, token)
    server.stop()
    # the supervisor stops two spawned workers one after the other: slower than one process on
    # a loaded machine, but nothing waits out the graceful timeout (that would log an ERROR)
    assert took < 10, f"SIGTERM took {took:.1f} s"
    log = server.log_text()
    assert "ERROR" not in log and "Traceback" not in log and "graceful" not in log, log
