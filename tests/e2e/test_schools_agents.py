"""Real agents on a service of two schools (policy_server/tenancy), real PostgreSQL, TLS.

School A answers at `127.0.0.1`, school B at `localhost` (both this machine, so no DNS is
needed); each real `kalkan-agent` enrols with its room's code at its school's address, pins
the service's certificate and delivers its events into its own school's database only.  An
agent of A pointed at B's address is refused there: its events stay in its outbox (nothing
lost) and B stores none of them."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from policy_server.db.models import Event
from policy_server.settings import Settings
from tests.support.agent_process import AgentProcess
from tests.support.postgres import postgres_cluster  # noqa: F401  (fixture)
from tests.support.server import REPO, free_port

pytestmark = pytest.mark.postgres
HOSTS = {"school-a": "127.0.0.1", "school-b": "localhost"}


class SchoolAddress:
    """What AgentProcess.enroll needs of a server, for one school of the service."""

    def __init__(self, service: Settings, slug: str, port: int) -> None:
        from policy_server.db.session import make_engine, make_sessionmaker
        from policy_server.tenancy.schools import find, school_settings
        from policy_server.tls import cert_fingerprint

        self.settings = school_settings(service, find(service, slug))
        self.url = f"https://{HOSTS[slug]}:{port}"
        self.fingerprint = cert_fingerprint(service.cert_path)
        self.engine = make_engine(self.settings.database_url)
        self.db = make_sessionmaker(self.engine)

    def make_enrollment_code(self, room: str | None = None, uses: int = 1, expires: str = "7d") -> str:
        from policy_server.agents.service import create_enrollment_code, parse_expiry
        from policy_server.school.service import ensure_room

        with self.db() as db:
            ensure_room(db, name=room, actor="test")
            code = create_enrollment_code(db, actor="test", room=room, uses=uses,
                                          expires_at=parse_expiry(expires))
            db.commit()
        return code

    def events(self, event_id: str) -> int:
        with self.db() as db:
            return db.scalar(select(func.count()).select_from(Event).where(Event.id == event_id))


@pytest.fixture(scope="module")
def service(request, tmp_path_factory: pytest.TempPathFactory):
    from policy_server.tenancy.schools import add_school

    cluster = request.getfixturevalue("postgres_cluster")
    root = tmp_path_factory.mktemp("schools-agents")
    settings = Settings(state_dir=root / "service", db_url=cluster.create_database())
    for slug, host in HOSTS.items():
        add_school(settings, slug=slug, name=slug, hosts=[host])
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KALKAN_CHECKS_FIRST_DELAY_S": "600"}
    log = open(root / "server.log", "ab")  # noqa: SIM115  (the child keeps it)
    command = [sys.executable, "-m", "policy_server.cli", "run", "--state-dir", str(settings.state_dir),
               "--db", settings.db_url, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            if settings.cert_path.exists():
                context = ssl.create_default_context(cafile=str(settings.cert_path))
                try:
                    health = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=2)
                    if health.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.2)
        schools = {slug: SchoolAddress(settings, slug, port) for slug in HOSTS}
        yield schools
        for school in schools.values():
            school.engine.dispose()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_real_agents_deliver_into_their_own_school_only(service, tmp_path: Path):
    a, b = service["school-a"], service["school-b"]
    agents = {}
    for slug, school in service.items():
        agent = AgentProcess(tmp_path / slug)
        agent.enroll(school, seat=f"{slug}-01", room="lab-1")
        assert agent.config["server_url"] == school.url
        agents[slug] = agent
    sent = {}
    for slug, agent in agents.items():
        with agent.start(collectors=["heartbeat"], heartbeat_s=1):
            sent[slug] = agent.emit("web.report", {"url": f"http://{slug}.example/"})
            # wait for the event in its school's database: the status file can still be the one
            # written before the event was queued (depth 0), and stopping then would strand it
            deadline = time.monotonic() + 30
            while service[slug].events(sent[slug]) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
    assert (a.events(sent["school-a"]), b.events(sent["school-a"])) == (1, 0)
    assert (a.events(sent["school-b"]), b.events(sent["school-b"])) == (0, 1)

    # A's agent, pointed at B's address (same machine, same certificate): refused, keeps its events
    stray = agents["school-a"]
    config = stray.config
    config["server_url"] = b.url
    (stray.state_dir / "config.json").write_text(json.dumps(config))
    with stray.start(collectors=[]):
        event_id = stray.emit("web.report", {"url": "http://stray.example/"})
        time.sleep(4)
        status = stray.status()
        assert status["outbox"]["depth"] >= 1
        # the token is unknown to B: refused (401), told in the agent's status, not a log line's tail
        assert status["uplink"]["token_refused"] is True, status["uplink"]
    assert (a.events(event_id), b.events(event_id)) == (0, 0)
