"""Several server workers on PostgreSQL: ids stored once, push from any process, checks run once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from sqlalchemy import func, select

from policy_server import protocol
from policy_server.checks.scheduler import CheckScheduler, Job
from policy_server.db import migrate
from policy_server.db.models import Event
from policy_server.db.session import make_engine, make_sessionmaker
from policy_server.workers import LeaderChecks, WorkersError, check_workers, default_workers
from tests.support.server import REPO, KalkanServerProcess

PG = "postgresql+psycopg://kalkan@127.0.0.1:5432/kalkan"


def test_auto_workers_are_one_on_sqlite_and_leave_a_core_to_postgresql():
    assert default_workers("sqlite:////tmp/k.sqlite") == 1
    assert default_workers("sqlite:////tmp/k.sqlite", cpus=8) == 1
    assert [default_workers(PG, cpus=n) for n in (1, 2, 3, 8)] == [1, 2, 2, 2]
    assert check_workers(3, PG) == 3
    with pytest.raises(WorkersError, match="needs PostgreSQL"):
        check_workers(2, "sqlite:////tmp/k.sqlite")
    with pytest.raises(WorkersError, match="1 or more"):
        check_workers(0, PG)


def test_run_refuses_several_workers_on_sqlite_with_the_fix(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "policy_server.cli", "run", "--state-dir", str(tmp_path), "--workers", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert out.returncode == 2
    assert "needs PostgreSQL" in out.stderr and "--db postgresql+psycopg://" in out.stderr
    assert not (tmp_path / "kalkan.sqlite").exists()  # refused before anything was made


@pytest.mark.postgres
@pytest.mark.e2e
def test_two_workers_store_each_id_once_and_push_changes_made_elsewhere(postgres_cluster, tmp_path,
                                                                        monkeypatch):
    # The 2 s poll is switched off in the server: only LISTEN/NOTIFY can carry the change.
    monkeypatch.setenv("KALKAN_PUSH_POLL_S", "3600")
    monkeypatch.setenv("KALKAN_WORKERS", "2")  # `run --workers 2` (auto is 1 on a 2-core machine)
    url = postgres_cluster.create_database()
    with KalkanServerProcess(tmp_path / "server", db_url=url) as server:
        supervisor = psutil.Process(server.proc.pid)
        workers = [p for p in supervisor.children() if "spawn_main" in " ".join(p.cmdline())
                   and "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in supervisor.children()]

        agent_id, token = server.enroll("pc-01", room="lab-1")
        blocked = [protocol.make_event("web.blocked", {"url": f"http://bad{i % 3}.example/",
                                                       "host": "bad.example"}) for i in range(300)]
        batch = {"events": [e.model_dump(mode="json") for e in blocked]}

        def post(_: int) -> dict:
            with server.agent_client(token) as c:
                r = c.post("/api/v1/events", json=batch)
                assert r.status_code == 200, r.text
                return r.json()

        with ThreadPoolExecutor(6) as pool:  # six connections: both workers take some
            answers = list(pool.map(post, range(6)))
        accepted = [i for a in answers for i in a["accepted"]]
        assert sorted(accepted) == sorted(e["id"] for e in batch["events"])  # each id once, overall
        for a in answers:
            assert not a["rejected"] and len(a["accepted"]) + len(a["duplicates"]) == 300
        with server.db() as db:
            assert db.scalar(select(func.count()).select_from(Event).where(Event.agent_id == agent_id)) == 300

        streams = 6
        received: list[list[dict]] = [[] for _ in range(streams)]
        connected = threading.Barrier(streams + 1, timeout=20)

        def listen(k: int) -> None:
            with server.agent_client(token) as c, c.stream("GET", "/api/v1/policy/stream", timeout=30) as r:
                for line in r.iter_lines():
                    if line.startswith("retry:"):
                        connected.wait()  # subscribed to its worker's hub
                    elif line.startswith("data: "):
                        received[k].append(json.loads(line[6:]))
                        return

        threads = [threading.Thread(target=listen, args=(k,), daemon=True) for k in range(streams)]
        for t in threads:
            t.start()
        connected.wait()
        version = server.amend_policy("from another process", lambda b: b)
        for t in threads:
            t.join(20)
        assert [r[-1]["version"] if r else None for r in received] == [version] * streams


@pytest.mark.postgres
def test_periodic_checks_run_in_one_worker_and_move_when_it_stops(postgres_cluster):
    url = postgres_cluster.create_database()
    engines = [make_engine(url) for _ in range(2)]  # one per pretend worker: separate connections
    migrate.upgrade(engines[0])
    runs: list[int] = []

    def leader(k: int) -> LeaderChecks:
        job = Job(name=f"count-{k}", interval_s=0.05, run=lambda db, now: runs.append(k))
        scheduler = CheckScheduler(make_sessionmaker(engines[k]), [job], first_delay_s=0)
        return LeaderChecks(scheduler, engines[k], retry_s=0.05)

    async def scenario() -> None:
        first, second = leader(0), leader(1)
        await first.start()
        await asyncio.sleep(0.3)
        await second.start()
        await asyncio.sleep(0.5)
        assert first.leading and not second.leading
        assert runs and set(runs) == {0}
        await first.stop()  # the leader goes away: its lock is released
        for _ in range(100):
            await asyncio.sleep(0.05)
            if second.leading and 1 in runs:
                break
        assert second.leading and runs[-1] == 1
        await second.stop()

    try:
        asyncio.run(scenario())
    finally:
        for engine in engines:
            engine.dispose()
