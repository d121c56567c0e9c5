"""The agent's metrics text file and JSON logs (docs/operations.md), on a real agent process."""

from __future__ import annotations

import json
import logging
import time

from agent.metrics import JsonFormatter, render
from tests.operations.test_metrics import parse
from tests.support.agent_process import AgentProcess
from tests.support.server import KalkanServerProcess


def test_render_is_valid_text_format_for_an_empty_and_a_full_status():
    empty = parse(render({}))
    assert empty["kalkan_agent_outbox_events"] == 0
    full = parse(
        render(
            {
                "agent_version": "1.2",
                "agent_id": 'a"b',
                "platform": "linux",
                "running": True,
                "uptime_s": 3.5,
                "enrolled": True,
                "uplink": {"sent": 7, "reachable": True, "last_success_at": 1.5e9},
                "policy": {"version": 4, "push_connected": True},
                "outbox": {
                    "depth": 3,
                    "bytes": 4096,
                    "max_bytes": 1 << 20,
                    "dropped": {"web.visit": 2},
                    "rejected": 1,
                },
                "collectors": {"usb": {"state": "ok"}, "av": {"state": "failed", "detail": "no clamd"}},
            }
        )
    )
    assert full['kalkan_agent_info{version="1.2",agent_id="a\\"b",platform="linux"}'] == 1
    assert full["kalkan_agent_outbox_events"] == 3
    assert full['kalkan_agent_outbox_dropped_total{type="web.visit"}'] == 2
    assert full["kalkan_agent_policy_version"] == 4
    assert full['kalkan_agent_collector_ok{collector="usb"}'] == 1
    assert full['kalkan_agent_collector_ok{collector="av"}'] == 0


def test_running_agent_writes_metrics_prom_beside_status(tmp_path):
    with KalkanServerProcess(tmp_path / "server") as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server, seat="seat-m")
        with agent.start(collectors=["heartbeat"], heartbeat_s=1):
            agent.emit("web.report", {"url": "http://metrics.test/"})
            agent.wait_status(lambda s: s["outbox"]["depth"] == 0 and (s["uplink"] or {}).get("sent", 0) >= 1)
            path = tmp_path / "agent" / "metrics.prom"
            deadline = time.monotonic() + 10
            samples: dict[str, float] = {}
            while time.monotonic() < deadline:
                samples = parse(path.read_text()) if path.exists() else {}
                if samples.get("kalkan_agent_uplink_sent_total", 0) >= 1:
                    break
                time.sleep(0.2)
            assert samples["kalkan_agent_running"] == 1
            assert samples["kalkan_agent_enrolled"] == 1
            assert samples["kalkan_agent_outbox_events"] == 0
            assert samples["kalkan_agent_uplink_sent_total"] >= 1
            assert samples["kalkan_agent_uplink_reachable"] == 1
            assert not list((tmp_path / "agent").glob("metrics.prom.*"))  # no temporary files left
        # stopped: the last file says so
        assert parse(path.read_text())["kalkan_agent_running"] == 0


def test_json_log_lines():
    record = logging.LogRecord("kalkan.agent", logging.WARNING, __file__, 1, "outbox %s full", ("is",), None)
    parsed = json.loads(JsonFormatter().format(record))
    assert parsed["level"] == "warning" and parsed["message"] == "outbox is full"
    assert parsed["logger"] == "kalkan.agent" and parsed["ts"].endswith("Z")


def test_running_agent_logs_json_lines(tmp_path):
    """A real `kalkan-agent --log-format json run` (not enrolled): every line is JSON."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "--log-format",
            "json",
            "run",
            "--state-dir",
            str(tmp_path),
            "--platform",
            "fake",
            "--collectors",
            "heartbeat",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not (tmp_path / "metrics.prom").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    lines = [line for line in out.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any non-JSON line
    assert any("not enrolled" in r["message"] for r in records)
    assert any(r["message"].startswith("signal 15") for r in records)
    assert (tmp_path / "metrics.prom").exists()
