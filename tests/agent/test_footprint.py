"""What the long-running agent keeps out of its memory (issues 2 and 6: RSS <= 50 MB).

A real `kalkan-agent run` connected to the real server; an import trap
(tests/support/import_trap.py) records which process imported which package.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.cli import UNUSED_IN_AGENT, keep_unused_modules_out
from tests.support.agent_process import AgentProcess
from tests.support.import_trap import import_trap, importers
from tests.support.server import KalkanServerProcess


def stored(server: KalkanServerProcess, event_id: str) -> bool:
    from policy_server.db.models import Event

    with server.db() as db:
        return db.get(Event, event_id) is not None


def test_the_running_agent_talks_to_the_server_without_httpx_or_http2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent speaks to the server with the standard library (agent/server_client.py):
    httpx and httpcore (~4.4 MB) and HTTP/2 (h2, hpack: 1.2 MB) stay out of it."""
    record = import_trap(tmp_path, monkeypatch, ["h2", "httpcore", "httpx", "http"])
    with KalkanServerProcess(tmp_path / "server") as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server, seat="seat-1")
        with agent.start(collectors=["heartbeat"], heartbeat_s=1):
            event_id = agent.emit("web.report", {"url": "http://x.test/"})
            deadline = time.monotonic() + 30
            while not stored(server, event_id):  # it went over the agent's HTTP client
                assert time.monotonic() < deadline, f"the event never reached the server\n{agent.log_text()}"
                time.sleep(0.2)
            pid = agent.proc.pid
            assert pid in importers(record, "http"), "the trap did not see the agent's client (http.client)"
            assert pid not in importers(record, "h2"), "the running agent loaded HTTP/2 (h2, hpack, +1.2 MB)"
            for heavy in ("httpx", "httpcore"):
                assert pid not in importers(record, heavy), f"the running agent imported {heavy} (+4.4 MB)"


def test_keeping_modules_out_leaves_loaded_ones_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    sentinel = object()
    monkeypatch.setitem(sys.modules, UNUSED_IN_AGENT[0], sentinel)
    keep_unused_modules_out()
    assert sys.modules[UNUSED_IN_AGENT[0]] is sentinel  # e.g. inside mitmdump, where HTTP/2 is used
