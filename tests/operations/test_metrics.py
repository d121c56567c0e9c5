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


def test_each_school_of_one_process_counts_its_own(tmp_path: Path):
    """In-process, SQLite, one process serving two schools (policy_server/tenancy): an event batch
    posted by an agent of school A, and runs of A's periodic jobs (one passes, one fails), are
    counted in A's `/metrics` and not in B's (each app keeps its own registry, `app.state.metrics`;
    a module-wide one showed every school the sum of all)."""
    import asyncio

    from policy_server.agents.service import create_enrollment_code, parse_expiry
    from policy_server.checks.scheduler import Job
    from policy_server.school.service import ensure_room
    from policy_server.tenancy import dispatch
    from policy_server.tenancy.schools import add_school

    settings = Settings(state_dir=tmp_path / "svc", tls=False, metrics_token=TOKEN,
                        checks_first_delay_s=3600)  # no job runs by itself during the test
    hosts = {"school-a": "a.metrics.test", "school-b": "b.metrics.test"}
    for slug, host in hosts.items():
        add_school(settings, slug=slug, name=slug, hosts=[host])
    service = dispatch.SchoolsService(settings)
    app_a, app_b = service.apps["school-a"], service.apps["school-b"]
    assert app_a.state.metrics is not app_b.state.metrics
    with app_a.state.sessionmaker() as db:
        ensure_room(db, name="Lab 1", actor="test")
        code = create_enrollment_code(db, actor="test", room="Lab 1", uses=1, expires_at=parse_expiry("1d"))
        db.commit()
    job = next(j for j in app_a.state.checks.jobs if j.name == "av.full_scan_overdue")
    broken = Job(name="test.broken", interval_s=3600, run=lambda db, now: 1 / 0)
    events = [
        protocol.make_event("web.report", {"url": f"http://a{i}.test/"}).model_dump(mode="json")
        for i in range(3)
    ]

    async def scenario() -> dict[str, dict[str, float]]:
        inbox: asyncio.Queue = asyncio.Queue()
        outbox: asyncio.Queue = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(service({"type": "lifespan"}, inbox.get, outbox.put))
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=service)
        scraped = {}
        try:
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{hosts['school-a']}") as a:
                r = await a.post("/api/v1/enroll", json={"code": code, "hostname": "pc-a", "seat": "s-1"})
                assert r.status_code == 200, r.text
                agent = {"Authorization": f"Bearer {r.json()['token']}"}
                r = await a.post("/api/v1/events", json={"events": events}, headers=agent)
                assert r.status_code == 200 and len(r.json()["accepted"]) == 3, r.text
                r = await a.post("/api/v1/events", content=b"{not json", headers={
                    **agent, "content-type": "application/json"})
                assert r.status_code == 400
            assert await asyncio.to_thread(app_a.state.checks.run_job, job)  # A's scheduler, as its loop does
            assert not await asyncio.to_thread(app_a.state.checks.run_job, broken)  # a failed run, logged
            for slug, host in hosts.items():
                async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
                    r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
                    assert r.status_code == 200, r.text
                    scraped[slug] = parse(r.text)
        finally:
            await inbox.put({"type": "lifespan.shutdown"})
            assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
            await lifespan
        return scraped

    scraped = asyncio.run(scenario())
    a, b = scraped["school-a"], scraped["school-b"]
    assert value(a, "kalkan_ingest_batches_total", outcome="stored") == 1
    assert value(a, "kalkan_ingest_batches_total", outcome="refused_400") == 1
    assert value(a, "kalkan_ingest_events_total", result="accepted") == 3
    assert value(a, "kalkan_ingest_batch_duration_seconds_count") == 2
    assert value(a, "kalkan_check_duration_seconds_count", check="av.full_scan_overdue") == 1
    assert value(a, "kalkan_check_failures_total", check="av.full_scan_overdue") == 0
    assert value(a, "kalkan_check_failures_total", check="test.broken") == 1
    assert value(a, "kalkan_check_last_run_timestamp_seconds", check="test.broken") > 0
    assert value(a, "kalkan_agents", state="online") == 1
    # B: nothing of A's — no batch, no event, no job run, no agent
    assert value(b, "kalkan_ingest_batches_total", outcome="stored") == 0
    assert not any("refused_" in key for key in b)
    assert value(b, "kalkan_ingest_events_total", result="accepted") == 0
    assert value(b, "kalkan_ingest_batch_duration_seconds_count") == 0
    assert not any(key.startswith("kalkan_check_") for key in b), [k for k in b if "check" in k]
    assert value(b, "kalkan_agents", state="online") == 0
    # the exposition is otherwise unchanged: every counter carries this process's worker label
    worker = f'worker="{os.getpid()}"'
    assert all(worker in key for key in a if key.startswith(("kalkan_ingest_", "kalkan_check_")))
