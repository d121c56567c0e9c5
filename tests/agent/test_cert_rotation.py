"""The server certificate's rotation, with a real `kalkan-server` and real `kalkan-agent`s
(docs/operations.md "Rotating the server certificate").

A seat enrolled under certificate A learns the announced next certificate B over its pinned
channel, reports it, and after `tls activate` + a restart on B keeps delivering without being
enrolled again; a seat that never heard the announcement is refused by B with the pin
mismatch that says how to fix it; a certificate nobody announced is refused; `activate`
refuses while a recently seen seat lacks the next pin unless `--force`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent.server_certs import APT_CA_ENV, pem_sha256
from agent.tls import NEXT_PIN_HEADER
from policy_server.db.models import Event
from tests.support.agent_process import AgentProcess
from tests.support.server import REPO, KalkanServerProcess


def server_cli(state_dir: Path, *args: str, lang: str = "en") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_server.cli", "--lang", lang, *args,
                           "--state-dir", str(state_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def agent_status(agent: AgentProcess) -> str:
    result = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--state-dir",
                             str(agent.state_dir)], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**agent._env(), "LANG": "C"})
    return result.stdout


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def delivered(server: KalkanServerProcess, event_id: str) -> bool:
    with server.db() as db:
        return db.get(Event, event_id) is not None


def old_agent_heartbeat(server: KalkanServerProcess, token: str) -> None:
    """An agent older than the rotation: its heartbeat carries no `tls_pins`."""
    import uuid
    from datetime import UTC, datetime

    event = {"id": str(uuid.uuid4()), "type": "agent.heartbeat", "occurred_at": datetime.now(UTC).isoformat(),
             "data": {"agent_version": "0.9", "hostname": "old-pc"}}
    with server.agent_client(token) as client:
        r = client.post("/api/v1/events", json={"events": [event]})
        assert r.status_code == 200, r.text
        assert r.headers.get(NEXT_PIN_HEADER, "").startswith("sha256:")  # announced to it too: it ignores it


@pytest.fixture
def server(tmp_path):
    with KalkanServerProcess(tmp_path / "server") as srv:
        yield srv


def pem_shas(path: Path) -> list[str]:
    """The SHA-256 of each certificate in a PEM bundle (apt's CaInfo file)."""
    end = "-----END CERTIFICATE-----"
    blocks = [b + end + "\n" for b in path.read_text().split(end) if "BEGIN" in b]
    return [pem_sha256(b) for b in blocks]


def test_a_seat_follows_the_rotation_and_an_unannounced_seat_is_told_to_enrol_again(server, tmp_path,
                                                                                   monkeypatch):
    cert_a = server.fingerprint
    apt_ca = tmp_path / "apt-kalkan-server.crt"  # as the seat install writes it: apt trusts the server
    apt_ca.write_text(server.cert_path.read_text())
    monkeypatch.setenv(APT_CA_ENV, str(apt_ca))  # (the agent processes inherit it)
    follower = AgentProcess(tmp_path / "follower")
    follower.enroll(server, seat="seat-1")
    stay_away = AgentProcess(tmp_path / "away")  # enrolled, then off during the whole rotation
    stay_away.enroll(server, seat="seat-2")
    _old_id, old_token = server.enroll("old-pc", seat="seat-old", room="lab-1")

    with follower.start(collectors=["heartbeat"], heartbeat_s=1):
        follower.wait_status(lambda s: s["uplink"] and s["uplink"]["last_success_at"])
        assert "Kalkan-Next-Pin".lower() not in {k.lower() for k in server.client().get("/healthz").headers}

        made = server_cli(server.state_dir, "tls", "rotate", "--json")
        assert made.returncode == 0, made.stderr
        cert_b = json.loads(made.stdout)["next"]
        assert json.loads(made.stdout)["served"] == cert_a != cert_b
        assert server.fingerprint == cert_a  # not served yet
        late = AgentProcess(tmp_path / "late")  # enrolled during the rotation: holds both at once
        late.enroll(server, seat="seat-3")
        assert (late.config["server_sha256"], late.config["server_sha256_next"]) == (cert_a, cert_b)

        # the running server announces it (no restart); the agent stores it beside its pin
        wait_for(lambda: follower.config.get("server_sha256_next") == cert_b, what="the next pin stored")
        assert follower.config["server_sha256"] == cert_a
        # apt on the seat trusts both, so `apt update` works on either side of the switch
        wait_for(lambda: pem_shas(apt_ca) == [cert_a, cert_b], what="apt trusting A and B")
        assert pem_sha256((follower.state_dir / "server.next.pem").read_text()) == cert_b
        # … and reports it: tls status counts it
        def counted():
            status = json.loads(server_cli(server.state_dir, "tls", "status", "--json").stdout)
            return status if [s["seat"] for s in status["ready"]] == ["seat-1"] else None
        status = wait_for(counted, what="the seat counted as ready")
        assert status["served"] == cert_a and status["next"] == cert_b
        assert {s["seat"] for s in status["absent"]} == {"seat-2", "seat-3", "seat-old"}  # never seen

        # an old agent seen now, without the next pin, holds the activation back
        old_agent_heartbeat(server, old_token)
        status = json.loads(server_cli(server.state_dir, "tls", "status", "--json").stdout)
        assert [s["seat"] for s in status["waiting"]] == ["seat-old"]
        text = server_cli(server.state_dir, "tls", "status").stdout
        assert "seats holding the next certificate: 1 of 4" in text and "seat-old (room lab-1" in text
        refused = server_cli(server.state_dir, "tls", "activate")
        assert refused.returncode == 2
        assert ("1 seat(s) seen in the last 14 days do not hold the next certificate yet: seat-old"
                in refused.stderr)
        assert "--force" in refused.stderr
        ru = server_cli(server.state_dir, "tls", "activate", lang="ru")
        assert ru.returncode == 2 and "ещё не знают следующий сертификат: seat-old" in ru.stderr
        assert server.fingerprint == cert_a  # nothing switched

        forced = server_cli(server.state_dir, "tls", "activate", "--force")
        assert forced.returncode == 0, forced.stderr
        assert f"The next certificate {cert_b} is now the server's certificate" in forced.stdout
        assert "systemctl restart kalkan-server" in forced.stdout
        assert server.fingerprint == cert_b
        prints = server_cli(server.state_dir, "fingerprint")
        assert prints.stdout.strip() == cert_b and prints.stderr == ""

        # a next certificate now would be announced without A, which the server serves until the
        # restart: refused, in the operator's language, and nothing made
        early = server_cli(server.state_dir, "tls", "rotate")
        assert early.returncode == 2 and f"still serves {cert_a}" in early.stderr, early.stderr
        assert "systemctl restart kalkan-server" in early.stderr
        ky = server_cli(server.state_dir, "tls", "rotate", lang="ky")
        assert ky.returncode == 2 and "кайра иштетиле элек" in ky.stderr
        assert json.loads(server_cli(server.state_dir, "tls", "status", "--json").stdout)["next"] is None

        # what the server hands out follows what it serves: A until the restart, then B
        with httpx.Client(base_url=server.url, verify=False) as plain:
            assert pem_sha256(plain.get("/install/server.crt").text) == cert_a
            # … and B is still announced, for a seat that comes on before the restart
            assert plain.get("/api/v1/policy").headers[NEXT_PIN_HEADER] == f"sha256:{cert_b}"
        server.restart()  # now serving B; the agent was not touched
        with server.client() as client:  # (trusts B alone)
            assert pem_sha256(client.get("/install/server.crt").text) == cert_b
            assert client.get("/install/server.next.crt").status_code == 404
            assert NEXT_PIN_HEADER not in client.get("/api/v1/policy").headers
        event_id = follower.emit("web.report", {"url": "http://after-rotation.test/"})
        wait_for(lambda: delivered(server, event_id), what="an event delivered over certificate B")
        wait_for(lambda: follower.config.get("server_sha256") == cert_b, what="the old pin dropped")
        assert follower.config.get("server_sha256_next") is None
        wait_for(lambda: pem_shas(apt_ca) == [cert_b], what="apt trusting B alone")
        assert pem_sha256((follower.state_dir / "server.pem").read_text()) == cert_b
        assert not (follower.state_dir / "server.next.pem").exists()
        assert "not the pinned" not in follower.log_text()

    # the seat that was off never heard of B: refused, with what to do
    status_text = agent_status(stay_away)
    assert "not the pinned" in status_text
    assert "kalkan-server tls activate" in status_text and "enroll" in status_text
    assert stay_away.config["server_sha256"] == cert_a
    # restarted, the server serves what the file holds: the next rotation may begin
    again = server_cli(server.state_dir, "tls", "rotate", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["served"] == cert_b, again.stderr


def serve(server: KalkanServerProcess, cert: bytes, key: bytes) -> None:
    """Restart the server on this certificate and key (someone else's server at the address)."""
    server.stop()
    server.cert_path.write_bytes(cert)
    (server.state_dir / "tls" / "server.key").write_bytes(key)
    server.start()


def test_unannounced_and_withdrawn_certificates_are_refused(server, tmp_path):
    from policy_server.tls import write_server_cert

    cert_a = server.fingerprint
    agent = AgentProcess(tmp_path / "agent")
    agent.enroll(server, seat="seat-1")
    made = server_cli(server.state_dir, "tls", "rotate", "--json")
    cert_b = json.loads(made.stdout)["next"]
    tls = server.state_dir / "tls"
    stolen = (tls / "server.next.crt").read_bytes(), (tls / "server.next.key").read_bytes()
    with agent.start(collectors=["heartbeat"], heartbeat_s=1):
        wait_for(lambda: agent.config.get("server_sha256_next") == cert_b, what="the next pin stored")

        # someone else's certificate (a new key, the same names), never announced
        other = tmp_path / "other"
        other.mkdir()
        write_server_cert(other / "c.crt", other / "c.key", dns_names=["localhost"],
                          ip_addresses=["127.0.0.1"])
        original = server.cert_path.read_bytes(), (tls / "server.key").read_bytes()
        serve(server, (other / "c.crt").read_bytes(), (other / "c.key").read_bytes())
        assert server.fingerprint not in (cert_a, cert_b)
        event_id = agent.emit("web.report", {"url": "http://never-delivered.test/"})
        wait_for(lambda: "not the pinned" in agent.log_text(), what="the agent refusing certificate C")
        time.sleep(2)
        assert not delivered(server, event_id)
        assert agent.config["server_sha256"] == cert_a and agent.config["server_sha256_next"] == cert_b

        # back on A; the next certificate's key may have leaked: withdraw it
        serve(server, *original)
        wait_for(lambda: delivered(server, event_id), what="the event delivered once A is back")
        cancelled = server_cli(server.state_dir, "tls", "cancel", lang="ky")
        assert cancelled.returncode == 0 and cert_b in cancelled.stdout and "кайтарылып" in cancelled.stdout
        wait_for(lambda: agent.config.get("server_sha256_next") is None, what="the withdrawn pin dropped")
        status = json.loads(server_cli(server.state_dir, "tls", "status", "--json").stdout)
        assert (status["next"], status["withdrawn"]) == (None, cert_b)

        # whoever holds the withdrawn key is refused now
        def refusals() -> int:
            return (agent.state_dir / "agent.log").read_text(errors="replace").count("not the pinned")
        before = refusals()
        serve(server, *stolen)
        second = agent.emit("web.report", {"url": "http://also-never-delivered.test/"})
        wait_for(lambda: refusals() > before,
                 what="the agent refusing the withdrawn certificate")
        time.sleep(2)
        assert not delivered(server, second)
        assert agent.config["server_sha256"] == cert_a
    with agent.outbox() as outbox:
        assert outbox.depth() >= 1  # kept for the real server
