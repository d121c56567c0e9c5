"""`/metrics`, JSON logs and scheduled backups on a real `kalkan-server run` process
(docs/operations.md).  One server for the module: started with a scrape token, a backup
folder and the other periodic jobs off, logging JSON."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from unittest import mock

import httpx
import pytest

from policy_server import protocol
from policy_server.operations.backup import last_backup_state
from policy_server.settings import Settings
from tests.support.server import KalkanServerProcess

TOKEN = "scrape-token-for-tests-0123456789"
PASSWORD = "long-password-ops-1"

# One sample line of the text format: name, optional {labels}, value.
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$"
)


def parse(text: str) -> dict[str, float]:
    """The exposition as {'name{labels}': value}; fails on any line that is not valid text format."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in typed, f"family {name} declared twice"
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in typed or family in typed, f"sample before its TYPE: {line!r}"
        samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return samples


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum over samples of `name` whose labels include `labels` (workers are summed)."""
    total, found = 0.0, False
    for key, v in samples.items():
        if key.split("{")[0] != name:
            continue
        if all(f'{k}="{val}"' in key for k, val in labels.items()):
            total += v
            found = True
    assert found, f"no sample {name} {labels}"
    return total


class JsonLogServer(KalkanServerProcess):
    def _command(self) -> list[str]:
        return super()._command() + ["--log-format", "json", "--log-level", "info"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ops")
    env = {
        "KALKAN_METRICS_TOKEN": TOKEN,
        "KALKAN_BACKUP_DIR": str(root / "backups"),
        "KALKAN_BACKUP_INTERVAL_S": "3600",
        "KALKAN_CHECKS_FIRST_DELAY_S": "1",
        "KALKAN_CHECKS_INTERVAL_S": "0",
        "KALKAN_ISUO_CHECKS_INTERVAL_S": "0",
        "KALKAN_SUMMARIES_INTERVAL_S": "0",
    }
    with mock.patch.dict(os.environ, env):
        proc = JsonLogServer(root / "server", tls=True)
        proc.start()
    proc.backup_dir = root / "backups"
    proc.create_user("admin", "boss", PASSWORD)
    proc.create_user("teacher", "teach", PASSWORD)
    try:
        yield proc
    finally:
        proc.stop()


def scrape(server: KalkanServerProcess, token: str = TOKEN) -> dict[str, float]:
    r = httpx.get(
        server.url + "/metrics",
        headers={"Authorization": f"Bearer {token}"},
        verify=server.verify,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def test_metrics_are_closed_to_everyone_but_the_admin_and_the_token(server):
    anonymous = httpx.get(server.url + "/metrics", verify=server.verify, timeout=10)
    assert anonymous.status_code == 401
    wrong = httpx.get(
        server.url + "/metrics",
        headers={"Authorization": "Bearer not-the-token"},
        verify=server.verify,
        timeout=10,
    )
    assert wrong.status_code == 401
    _agent_id, agent_token = server.enroll("pc-scope", seat="s-1", room="lab-ops")
    with server.agent_client(agent_token) as agent:
        assert agent.get("/metrics").status_code == 401
    with server.login("teach", PASSWORD) as teacher:
        assert teacher.get("/metrics").status_code == 403
    with server.login("boss", PASSWORD) as admin:
        r = admin.get("/metrics")
        assert r.status_code == 200
        assert "kalkan_agents{" in r.text
    assert "kalkan_ingest_batches_total" in scrape(server).__repr__()


def test_ingest_and_agents_are_counted(server):
    before = scrape(server)
    stored_before = sum(
        v
        for k, v in before.items()
        if k.startswith("kalkan_ingest_batches_total") and 'outcome="stored"' in k
    )
    agent_id, token = server.enroll("pc-ingest", seat="s-2", room="lab-ops")
    events = [
        protocol.make_event("web.report", {"url": f"http://x{i}.test/"}).model_dump(mode="json")
        for i in range(5)
    ]
    bad = dict(events[0], id="not-a-uuid")
    with server.agent_client(token) as agent:
        r = agent.post("/api/v1/events", json={"events": events})
        assert r.status_code == 200 and len(r.json()["accepted"]) == 5
        r = agent.post("/api/v1/events", json={"events": events[:2] + [bad]})  # 2 dup, 1 invalid
        assert r.status_code == 200
        assert (
            agent.post(
                "/api/v1/events", content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
    after = scrape(server)
    stored_after = sum(
        v for k, v in after.items() if k.startswith("kalkan_ingest_batches_total") and 'outcome="stored"' in k
    )
    assert stored_after - stored_before == 2
    assert value(after, "kalkan_ingest_batches_total", outcome="refused_400") >= 1
    assert (
        value(after, "kalkan_ingest_events_total", result="accepted")
        - value(before, "kalkan_ingest_events_total", result="accepted")
        == 5
    )
    assert value(after, "kalkan_ingest_events_total", result="duplicate") >= 2
    assert value(after, "kalkan_ingest_events_total", result="rejected") >= 1
    count = value(after, "kalkan_ingest_batch_duration_seconds_count")
    assert value(after, "kalkan_ingest_batch_duration_seconds_bucket", le="+Inf") == count >= 3
    assert value(after, "kalkan_ingest_batch_duration_seconds_sum") > 0
    # the agent that posted is online; the one enrolled but silent (test above) is not seen
    assert value(after, "kalkan_agents", state="online") >= 1
    assert value(after, "kalkan_push_connections") == 0


def test_scheduled_backup_is_made_checked_and_exposed(server):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        samples = scrape(server)
        if samples.get("kalkan_backup_last_ok") == 1:
            break
        time.sleep(0.5)
    assert samples.get("kalkan_backup_last_ok") == 1, server.log_text()
    assert samples["kalkan_backup_configured"] == 1
    assert value(samples, "kalkan_check_duration_seconds_count", check="backup") == 1
    assert value(samples, "kalkan_check_failures_total", check="backup") == 0
    files = sorted(server.backup_dir.glob("kalkan-*.sqlite"))
    assert len(files) == 1
    assert abs(samples["kalkan_backup_last_timestamp_seconds"] - files[0].stat().st_mtime) < 2

    settings = Settings(state_dir=server.state_dir, backup_dir=str(server.backup_dir))
    state = last_backup_state(settings)
    assert state.ok and state.path == files[0] and not state.overdue and state.problem is None

    # A damaged newest backup: the check fails, for the service and for /metrics.
    data = bytearray(files[0].read_bytes())
    data[4096:8192] = b"\x00" * 4096  # a page of the database zeroed
    files[0].write_bytes(bytes(data))
    state = last_backup_state(settings)
    assert not state.ok and state.code in ("backup.damaged", "backup.not_kalkan"), state
    assert scrape(server)["kalkan_backup_last_ok"] == 0


def test_last_backup_state_without_folder_or_backup(tmp_path: Path):
    assert last_backup_state(Settings(state_dir=tmp_path)).code == "backup.not_configured"
    (tmp_path / "b").mkdir()
    state = last_backup_state(Settings(state_dir=tmp_path, backup_dir=str(tmp_path / "b")))
    assert state.configured and not state.ok and state.code == "backup.none"


def test_server_logs_are_json_lines(server):
    lines = [line for line in server.log_text().splitlines() if line.startswith("{")]
    assert lines, server.log_text()
    records = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert any(r["logger"] == "kalkan.backup" and "backup written" in r["message"] for r in records)
