"""The real `kalkan-server` process: TLS, restart idempotency, SSE push, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from policy_server import protocol
from tests.support.server import REPO, KalkanServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request, tmp_path):
    db_url = (
        None if request.param == "sqlite" else request.getfixturevalue("postgres_cluster").create_database()
    )
    with KalkanServerProcess(tmp_path / "server", db_url=db_url) as proc:
        yield proc


def test_same_batch_across_restart_is_stored_once(server):
    _, token = server.enroll("pc-01", room="lab-1")
    batch = {
        "events": [
            protocol.make_event("web.report", {"url": f"http://x{i}.example/"}).model_dump(mode="json")
            for i in range(20)
        ]
    }
    with server.agent_client(token) as c:
        first = c.post("/api/v1/events", json=batch).json()
    assert len(first["accepted"]) == 20
    server.kill()  # no graceful shutdown: what was answered must be on disk
    server.start()
    with server.agent_client(token) as c:
        again = c.post("/api/v1/events", json=batch).json()
    assert again["accepted"] == [] and sorted(again["duplicates"]) == sorted(first["accepted"])


def test_tls_certificate_is_pinned_and_fingerprint_printed(server):
    assert len(server.fingerprint) == 64
    with pytest.raises(httpx.ConnectError):  # not trusted by the system store
        httpx.get(server.url + "/healthz")
    out = subprocess.run(
        [sys.executable, "-m", "policy_server.cli", "fingerprint", "--state-dir", str(server.state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert out.stdout.strip() == server.fingerprint


def test_policy_push_reaches_sse_client(server):
    _, token = server.enroll("pc-01", room="lab-1")
    received: list[dict] = []
    connected = threading.Event()

    def listen() -> None:
        with server.agent_client(token) as c, c.stream("GET", "/api/v1/policy/stream", timeout=20) as r:
            connected.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if received[-1]["version"] >= 1:
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(10)
    time.sleep(0.3)
    changed_at = time.monotonic()
    version = server.amend_policy(
        "block a site",
        lambda b: b.model_copy(
            update={"filtering": b.filtering.model_copy(update={"block_list": ["bad.example"]})}
        ),
    )
    thread.join(10)
    assert received and received[-1]["version"] == version == 1
    assert time.monotonic() - changed_at < 5  # changes from another process are polled every 2 s
    with server.agent_client(token) as c:
        fetched = c.get("/api/v1/policy").json()
    assert fetched["content_hash"] == received[-1]["content_hash"]
    # the push carries the room's bundle itself: exactly what GET answers, so no second request
    assert received[-1]["bundle"] == fetched


def test_cli_demo_is_idempotent_and_codes_enrol(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "policy_server.cli", *args, "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    first = json.loads(cli("demo", "--json").stdout)
    second = json.loads(cli("demo", "--json").stdout)
    assert first["logins"] == second["logins"] and set(first["logins"]) == {"admin", "teacher", "director"}
    assert first["enrollment_code"] != second["enrollment_code"]
    # the demo teacher works in the demo lab (person_rooms: what the scope reads), once
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'kalkan.sqlite'}")
    with engine.connect() as conn:
        rooms = conn.execute(text("SELECT rooms.name FROM person_rooms JOIN people ON people.id = person_id "
                                  "JOIN rooms ON rooms.id = room_id WHERE people.username = 'teacher'")).all()
    engine.dispose()
    assert rooms == [("lab-1",)]
    bad = cli("enrollment-code", "--room", "no-such-room")
    assert bad.returncode == 2 and "room 'no-such-room' does not exist" in bad.stderr
    bad = cli("enrollment-code", "--expires", "yesterday")
    assert bad.returncode == 2 and "not understood" in bad.stderr
    short = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy_server.cli",
            "create-user",
            "--role",
            "admin",
            "--username",
            "x1",
            "--password-stdin",
            "--state-dir",
            str(tmp_path),
        ],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert short.returncode == 2 and "too short" in short.stderr
    with KalkanServerProcess(tmp_path) as server, server.client() as c:
        r = c.post("/api/v1/enroll", json={"code": second["enrollment_code"], "hostname": "pc-01"})
        assert r.status_code == 200 and r.json()["school"] == "Demo School No. 1"
        agent_id = r.json()["agent_id"]
        assert cli("revoke-agent", agent_id).returncode == 0
        r = c.get("/api/v1/policy", headers={"Authorization": f"Bearer {r.json()['token']}"})
        assert r.status_code == 401
        with server.login("admin", first["logins"]["admin"]) as admin:
            assert admin.get("/api/v1/me").json()["person"]["role"] == "admin"


def test_backup_while_the_server_takes_events(server, tmp_path):
    """`kalkan-server backup` next to a running server that is being written to: the copy is
    consistent (checked), and every event answered before the backup started is in it."""
    _, token = server.enroll("pc-01", room="lab-1")
    before = [protocol.make_event("web.report", {"url": f"http://b{i}.example/"}).model_dump(mode="json")
              for i in range(50)]
    stop = threading.Event()
    answers: list[int] = []

    def keep_posting() -> None:
        with server.agent_client(token) as c:
            while not stop.is_set():
                beat = protocol.make_event("agent.heartbeat", {"agent_version": "1"})
                batch = [{**beat.model_dump(mode="json"), "id": str(uuid.uuid4())} for _ in range(50)]
                answers.append(c.post("/api/v1/events", json={"events": batch}).status_code)

    with server.agent_client(token) as c:
        assert len(c.post("/api/v1/events", json={"events": before}).json()["accepted"]) == 50
    writer = threading.Thread(target=keep_posting)
    writer.start()
    try:
        out = tmp_path / "online-backup"
        args = ["--state-dir", str(server.state_dir)] + (["--db", server.db_url] if server.db_url else [])
        made = subprocess.run([sys.executable, "-m", "policy_server.cli", "backup", "--out", str(out), *args],
                              capture_output=True, text=True, cwd=REPO)
    finally:
        stop.set()
        writer.join(20)
    assert made.returncode == 0, made.stderr
    assert answers and set(answers) == {200}  # the server kept taking events during the backup
    checked = subprocess.run([sys.executable, "-m", "policy_server.cli", "check-backup", str(out)],
                             capture_output=True, text=True, cwd=REPO)
    assert checked.returncode == 0 and "backup OK" in checked.stdout, checked.stderr
    if server.db_url is None:  # SQLite: the copy is a database; read it directly
        import sqlite3

        copy = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
        stored = {row[0] for row in copy.execute("SELECT id FROM events WHERE type = 'web.report'")}
        copy.close()
        assert stored == {e["id"] for e in before}
