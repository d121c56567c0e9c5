"""The uplink against a real `kalkan-server` (and a real agent process): a batch the server
keeps failing is split, the one event at fault moved aside, everything else delivered once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from policy_server.db.models import Event
from tests.support.agent_process import AgentProcess
from tests.support.server import KalkanServerProcess

FAULTS = Path(__file__).resolve().parents[1] / "support" / "faults"
POISON_URL = "http://poison.test/fails-the-server"


def test_agent_moves_aside_the_event_a_server_keeps_failing_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    monkeypatch.setenv("KALKAN_FAULT_POISON_URL", POISON_URL)
    with KalkanServerProcess(tmp_path / "server", tls=True) as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server, seat="seat-1")
        # a backlog with the poison in the middle, written before the agent runs: one batch
        ids = [agent.emit("web.report", {"url": f"http://fine.test/{i}"}) for i in range(8)]
        poison = agent.emit("web.report", {"url": POISON_URL})
        ids += [agent.emit("web.report", {"url": f"http://fine.test/after/{i}"}) for i in range(8)]
        with agent.start(collectors=["heartbeat"]):
            status = agent.wait_status(lambda s: s["outbox"]["depth"] == 0, timeout=60)
        with agent.outbox() as box:
            rejected = box.rejected()
        assert [r.id for r in rejected] == [poison]
        assert "failed on this event alone" in rejected[0].error and "500" in rejected[0].error
        with server.db() as db:
            stored = list(db.scalars(select(Event.id).where(Event.type == "web.report")))
        assert sorted(stored) == sorted(ids)  # every other event once, the poison not at all
        assert status["uplink"]["rejected"] == 1
        assert "refused alone" not in server.log_text()  # the isolation was off: the agent did it
