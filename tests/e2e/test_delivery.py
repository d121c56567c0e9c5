"""End-to-end delivery with real processes: `kalkan-server run` and `kalkan-agent run`.

* events made while the server is down arrive once it is up;
* the agent killed with SIGKILL in the middle of an upload loses and duplicates nothing;
* the same batch posted twice across a server restart is stored once;
* a policy push reaches a running agent within 2 s, and an offline start uses the last
  good bundle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from agent.outbox import Outbox, OutboxSink
from agent.server_client import ServerClient
from policy_server.db.models import Event
from policy_server.protocol import make_event
from tests.support.agent_process import AgentProcess
from tests.support.server import KalkanServerProcess

pytestmark = pytest.mark.e2e


def _server_ids(server: KalkanServerProcess, agent_id: str, event_type: str = "web.report") -> list[str]:
    with server.db() as db:
        return list(db.scalars(select(Event.id).where(Event.agent_id == agent_id, Event.type == event_type)))


def _server_count(server: KalkanServerProcess, agent_id: str) -> int:
    with server.db() as db:
        return db.scalar(select(func.count()).select_from(Event).where(
            Event.agent_id == agent_id, Event.type == "web.report")) or 0


def _wait(predicate, timeout: float, what: str, *, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_events_made_while_the_server_is_down_arrive_after_it_starts(tmp_path: Path) -> None:
    server = KalkanServerProcess(tmp_path / "server").start()
    agent = AgentProcess(tmp_path / "agent")
    try:
        agent.enroll(server, seat="seat-3")
        agent_id = agent.config["agent_id"]
        server.stop()
        with agent.start(collectors=["heartbeat"], heartbeat_s=3600):
            made = [agent.emit("web.report", {"url": f"http://offline.test/{i}"}) for i in range(40)]
            # a status written after the 40 (one written before them may already say "unreachable")
            agent.wait_status(lambda s: s["uplink"]["reachable"] is False and s["outbox"]["depth"] >= 40)
            server.start()
            _wait(lambda: len(_server_ids(server, agent_id)) == 40, 40, "the 40 offline events")
            assert sorted(_server_ids(server, agent_id)) == sorted(made)
            agent.wait_status(lambda s: s["outbox"]["depth"] == 0 and s["uplink"]["reachable"])
        with server.db() as db:
            seats = set(db.scalars(select(Event.seat).where(Event.agent_id == agent_id)))
        # the seat from enrolment, on the agent's own events and on those of another process
        assert seats == {"seat-3"}
    finally:
        agent.kill()
        server.stop()


def test_sigkill_during_upload_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    # Enough events that the upload takes over a second even at the server's full ingest
    # speed (~16,000/s here), so the kill lands mid-upload on a quiet machine too.
    total = 20_000
    with KalkanServerProcess(tmp_path / "server") as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server)
        agent_id = agent.config["agent_id"]
        envelopes = [make_event("web.report", {"url": f"http://bulk.test/{i}"}) for i in range(total)]
        with agent.outbox() as outbox:
            assert all(outbox.add_many(envelopes))
        made = {str(e.id) for e in envelopes}
        agent.start(collectors=["heartbeat"], heartbeat_s=3600)
        try:
            _wait(lambda: _server_count(server, agent_id) > 0, 60, "the first batch on the server",
                  poll_s=0.01)
        finally:
            agent.kill()
        at_kill = _server_count(server, agent_id)
        assert 0 < at_kill < total, f"the kill did not land mid-upload ({at_kill} of {total} stored)"
        with agent.start(collectors=["heartbeat"], heartbeat_s=3600):
            agent.wait_status(lambda s: s["outbox"]["depth"] == 0, timeout=120)
        stored = _server_ids(server, agent_id)
        assert len(stored) == total and set(stored) == made
        with agent.outbox() as outbox:
            assert outbox.rejected_count() == 0 and outbox.depth() == 0


def test_same_batch_twice_across_a_server_restart_is_stored_once(tmp_path: Path) -> None:
    with KalkanServerProcess(tmp_path / "server") as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server)
        config = agent.config
        token = (agent.state_dir / "token").read_text().strip()
        with Outbox(agent.state_dir / "outbox.sqlite") as outbox:
            sink = OutboxSink(outbox)
            made = [sink.emit("web.report", {"url": f"http://twice.test/{i}"}) for i in range(25)]
            batch = outbox.peek_batch(100)
        body = b'{"events":[' + b",".join(e.body.encode() for e in batch) + b"]}"

        def post() -> dict:
            client = ServerClient(config["server_url"], token=token, sha256=config["server_sha256"])
            try:
                response = client.post_events(body)
                assert response.status_code == 200, response.text
                return response.json()
            finally:
                client.close()

        first = post()
        assert sorted(first["accepted"]) == sorted(made) and not first["duplicates"]
        server.restart()
        second = post()
        assert sorted(second["duplicates"]) == sorted(made) and not second["accepted"]
        assert sorted(_server_ids(server, config["agent_id"])) == sorted(made)


def test_policy_push_within_2s_and_offline_start_with_last_good_bundle(tmp_path: Path) -> None:
    server = KalkanServerProcess(tmp_path / "server").start()
    agent = AgentProcess(tmp_path / "agent")
    try:
        agent.enroll(server)
        agent_id = agent.config["agent_id"]
        policy_file = agent.state_dir / "policy.json"
        with agent.start(collectors=["heartbeat"], heartbeat_s=3600):
            status = agent.wait_status(lambda s: s["policy"]["push_connected"] and s["policy"]["version"]
                                       is not None)
            before = status["policy"]["version"]
            version = server.amend_policy("e2e push", lambda b: b.model_copy(update={"school": "Pushed"}))
            pushed_at = time.monotonic()
            assert version > before
            while json.loads(policy_file.read_text())["version"] != version:
                assert time.monotonic() - pushed_at < 2.0, "the pushed policy was not applied within 2 s"
                time.sleep(0.02)
        assert json.loads(policy_file.read_text())["school"] == "Pushed"
        server.stop()
        # Offline start: the server is down, the agent works with the bundle it kept.
        with agent.start(collectors=["heartbeat"], heartbeat_s=1):
            status = agent.wait_status(lambda s: s["uplink"]["reachable"] is False)
            assert status["policy"]["version"] == version
            server.start()

            def heartbeat_with_version() -> bool:
                with server.db() as db:
                    rows = db.scalars(select(Event.data).where(Event.agent_id == agent_id,
                                                               Event.type == "agent.heartbeat"))
                    return any(data.get("policy_version") == version for data in rows)

            _wait(heartbeat_with_version, 40, "a heartbeat carrying the kept policy version")
    finally:
        agent.kill()
        server.stop()
