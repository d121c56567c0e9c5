"""Agents bound to their seat: the enrolled seat and hostname are stored, a different claim
is a finding; `rebind-agent` changes the binding; revoking closes the push stream at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from policy_server import protocol
from policy_server.db.models import AuditRecord, Event, Incident, IncidentEvent, Workstation
from tests.support.server import REPO, KalkanServerProcess


def _report(seat: str | None) -> protocol.EventEnvelope:
    return protocol.make_event("web.report", {"url": "http://x.example/"},
                               subject=protocol.Subject(os_user="st1", seat=seat))


def _heartbeat(hostname: str) -> protocol.EventEnvelope:
    return protocol.make_event("agent.heartbeat", {"agent_version": "1", "hostname": hostname})


def _findings(api) -> list[Incident]:
    with api.db() as db:
        return list(db.scalars(select(Incident).where(Incident.rule == "agent.identity_mismatch")
                               .order_by(Incident.id)))


def test_events_carry_the_enrolled_seat_and_a_foreign_claim_is_a_finding(api):
    agent_a, auth_a = api.enroll("pc-a", seat="seat-1")
    api.enroll("pc-b", seat="seat-2")
    honest, forged, forged_again = _report("seat-1"), _report("seat-2"), _report("seat-2")
    api.post(auth_a, honest, forged)
    api.post(auth_a, forged_again)
    with api.db() as db:
        seats = {row.id: row.seat for row in db.execute(select(Event.id, Event.seat))}
        assert seats[str(forged.id)] == "seat-1" and seats[str(honest.id)] == "seat-1"
    [finding] = _findings(api)  # one finding per agent and claim while it is open
    assert finding.agent_id == agent_a and finding.seat == "seat-1" and finding.event_count == 2
    assert finding.clauses == ["000 §5.5", "000 §3.2"] and finding.severity == "high"
    assert finding.params["claimed"] == "seat-2" and finding.params["enrolled"] == "seat-1"
    assert "reports seat 'seat-2'" in finding.title
    with api.db() as db:
        linked = set(db.scalars(select(IncidentEvent.event_id)
                                .where(IncidentEvent.incident_id == finding.id)))
    assert linked == {str(forged.id), str(forged_again.id)}


def test_a_heartbeat_never_renames_the_workstation_and_a_foreign_hostname_is_a_finding(api):
    agent_id, auth = api.enroll("pc-a", seat="seat-1")
    api.post(auth, _heartbeat("pc-a"))
    assert _findings(api) == []
    api.post(auth, _heartbeat("teachers-pc"))
    with api.db() as db:
        assert db.get(Workstation, agent_id).hostname == "pc-a"
    [finding] = _findings(api)
    assert finding.params["what"] == "hostname" and finding.params["claimed"] == "teachers-pc"


def test_rebind_changes_what_the_workstation_is_bound_to_and_is_audited(api):
    from policy_server.agents.binding import rebind_agent

    agent_id, auth = api.enroll("pc-a", seat="seat-1")
    with api.db() as db:
        rebind_agent(db, agent_id=agent_id, actor="admin", seat="seat-7", hostname="pc-7")
        db.commit()
    moved = _report("seat-7")
    api.post(auth, moved, _heartbeat("pc-7"))
    assert _findings(api) == []
    with api.db() as db:
        assert db.get(Event, str(moved.id)).seat == "seat-7"
        record = db.scalar(select(AuditRecord).where(AuditRecord.action == "agent.rebind"))
        assert record.detail["before"] == {"seat": "seat-1", "hostname": "pc-a"}
        assert record.detail["after"] == {"seat": "seat-7", "hostname": "pc-7"}


def _open_stream(server: KalkanServerProcess, token: str):
    """A thread holding the agent's push stream; returns (connected, ended_at holder)."""
    connected, ended = threading.Event(), []

    def listen():
        with server.agent_client(token) as c, c.stream("GET", "/api/v1/policy/stream", timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("retry:"):
                    connected.set()
        ended.append(time.monotonic())

    threading.Thread(target=listen, daemon=True).start()
    assert connected.wait(20)
    return ended


def _revoke_by_cli(server: KalkanServerProcess, agent_id: str) -> float:
    cmd = [sys.executable, "-m", "policy_server.cli", "revoke-agent", agent_id,
           "--state-dir", str(server.state_dir)]
    if server.db_url:
        cmd += ["--db", server.db_url]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True, timeout=60)
    return time.monotonic()


def _wait_ended(ended: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ended and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended, f"the revoked agent's push stream stayed open {timeout} s"


def test_revoke_agent_closes_its_push_stream_sqlite(tmp_path):
    """SQLite, `kalkan-server revoke-agent` in another process: the hub's poll (2 s) sees it."""
    with KalkanServerProcess(tmp_path / "server") as server:
        agent_id, token = server.enroll("pc-01", seat="seat-1")
        _, other_token = server.enroll("pc-02", seat="seat-2")
        ended, other = _open_stream(server, token), _open_stream(server, other_token)
        revoked_at = _revoke_by_cli(server, agent_id)
        _wait_ended(ended, 5)
        assert ended[0] - revoked_at < 4.5
        time.sleep(0.5)
        assert other == []  # the other agent's stream stays open
        with server.agent_client(token) as c:
            assert c.get("/api/v1/policy/stream").status_code == 401


@pytest.mark.postgres
def test_revoke_agent_closes_its_push_stream_in_every_worker(postgres_cluster, tmp_path, monkeypatch):
    """PostgreSQL, two workers, the poll switched off: NOTIFY alone closes the streams, at once."""
    monkeypatch.setenv("KALKAN_PUSH_POLL_S", "3600")
    monkeypatch.setenv("KALKAN_WORKERS", "2")
    url = postgres_cluster.create_database()
    with KalkanServerProcess(tmp_path / "server", db_url=url) as server:
        agent_id, token = server.enroll("pc-01", seat="seat-1")
        streams = [_open_stream(server, token) for _ in range(4)]  # both workers hold some
        revoked_at = _revoke_by_cli(server, agent_id)
        for ended in streams:
            _wait_ended(ended, 3)
            assert ended[0] - revoked_at < 2.0


def test_rebind_agent_command(api, db_url, tmp_path, capsys):
    from policy_server.cli import main

    agent_id, _ = api.enroll("pc-a", seat="seat-1")
    state = str(api.app.state.settings.state_dir)
    assert main(["--lang", "ru", "rebind-agent", agent_id, "--seat", "seat-9", "--state-dir", state,
                 "--db", db_url]) == 0
    assert "seat-9" in capsys.readouterr().out
    assert main(["rebind-agent", agent_id, "--no-seat", "--hostname", "pc-z", "--state-dir", state,
                 "--db", db_url]) == 0
    with api.db() as db:
        ws = db.get(Workstation, agent_id)
        assert (ws.seat, ws.hostname) == (None, "pc-z")
    assert main(["rebind-agent", "no-such-agent", "--seat", "x", "--state-dir", state, "--db", db_url]) != 0
