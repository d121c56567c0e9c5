"""Scale-out: two `kalkan-server` replicas, each in its own network namespace ("host"), behind
nginx on one PostgreSQL (tests/support/replicas.py; docs/operations.md "Scale out").

What must hold whichever replica a request lands on: the policy push (a change made through
one replica reaches agents streaming from the other within 1 s), revocation (streams close on
every replica), logins and their CSRF tokens, one leader for the periodic checks that moves
when it dies, and agents that lose their replica mid-stream reconnect through nginx to the
other without losing or doubling an event.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from policy_server.db.models import Event
from tests.support.agent_process import AgentProcess
from tests.support.replicas import ReplicaRig
from tests.support.timetable import period_now

pytestmark = pytest.mark.postgres

RIG_ENV = {
    "KALKAN_CHECKS_FIRST_DELAY_S": "0.5",
    "KALKAN_ISUO_CHECKS_INTERVAL_S": "1",  # a periodic job every second: the leader is visible
    "KALKAN_LEADER_RETRY_S": "0.5",
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with ReplicaRig(tmp_path_factory.mktemp("rig"), replicas=2, env=RIG_ENV) as rig:
        rig.front.create_user("admin", "boss", "long-password-boss")
        yield rig


class Stream:
    """An agent's policy SSE stream in a thread: the versions it hears and when it ends."""

    def __init__(self, base_url: str, verify, token: str) -> None:
        self.versions: list[tuple[float, int]] = []
        self.ended_at: float | None = None
        self.opened = threading.Event()
        self._client = httpx.Client(base_url=base_url, verify=verify, timeout=httpx.Timeout(5, read=60))
        self._token = token
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", "/api/v1/policy/stream",
                                     headers={"Authorization": f"Bearer {self._token}"}) as r:
                assert r.status_code == 200, r.status_code
                for line in r.iter_lines():
                    if line.startswith("retry:"):
                        self.opened.set()
                    elif line.startswith("data: "):
                        self.versions.append((time.monotonic(), json.loads(line[6:])["version"]))
        except httpx.HTTPError:
            pass
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()

    def wait_version(self, version: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, v in self.versions:
                if v >= version:
                    return at
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self._client.close()


def admin_on(rig: ReplicaRig, base_url: str) -> httpx.Client:
    with httpx.Client(base_url=base_url, verify=rig.verify, timeout=30) as first:
        r = first.post("/api/v1/login", json={"username": "boss", "password": "long-password-boss"})
        assert r.status_code == 200, r.text
        cookies = dict(first.cookies)
    return httpx.Client(base_url=base_url, verify=rig.verify, timeout=30, cookies=cookies,
                        headers={"X-CSRF-Token": r.json()["csrf_token"]})


def current_version(rig: ReplicaRig) -> int:
    from policy_server.db.models import PolicyVersion

    with rig.front.db() as db:
        return db.scalar(select(func.max(PolicyVersion.version))) or 0


def test_a_change_through_replica_a_reaches_agents_on_replica_b_within_1s(rig):
    a, b = rig.replicas
    _, token = rig.front.enroll("pc-push", room="lab-1")
    on_b = Stream(b.url, rig.verify, token)
    through_nginx = [Stream(rig.url, rig.verify, token) for _ in range(4)]  # round robin: both replicas
    try:
        with admin_on(rig, a.url) as admin:  # the change is made on replica A only
            before = current_version(rig)
            sent = time.monotonic()
            r = admin.post("/api/v1/usb/allow", json={"vendor_id": "0781", "product_id": "5567"})
            assert r.status_code in (200, 201), r.text
        version = current_version(rig)
        assert version > before
        heard = on_b.wait_version(version, 5)
        assert heard is not None, "the agent on replica B never heard of the change"
        assert heard - sent < 1.0, f"replica B's agent heard it after {heard - sent:.2f} s"
        for stream in through_nginx:
            at = stream.wait_version(version, 5)
            assert at is not None and at - sent < 1.0
        assert rig.push_connections(0) >= 2 and rig.push_connections(1) >= 3  # nginx spread them
    finally:
        for stream in (on_b, *through_nginx):
            stream.close()


def test_revoking_an_agent_closes_its_streams_on_every_replica(rig):
    from policy_server.agents.service import revoke_agent

    agent_id, token = rig.front.enroll("pc-revoked", room="lab-1")
    streams = [Stream(replica.url, rig.verify, token) for replica in rig.replicas]
    try:
        assert all(s.ended_at is None for s in streams)
        with rig.front.db() as db:  # from a third process (as `kalkan-server revoke-agent` does)
            revoke_agent(db, agent_id=agent_id, actor="test")
            db.commit()
        revoked = time.monotonic()
        deadline = revoked + 5
        while time.monotonic() < deadline and any(s.ended_at is None for s in streams):
            time.sleep(0.01)
        assert all(s.ended_at is not None and s.ended_at - revoked < 1.0 for s in streams), \
            [None if s.ended_at is None else round(s.ended_at - revoked, 2) for s in streams]
        with httpx.Client(base_url=rig.url, verify=rig.verify) as c:  # and it cannot come back
            assert c.get("/api/v1/policy", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        for stream in streams:
            stream.close()


def test_a_teacher_logged_in_through_nginx_keeps_working_on_either_replica(rig):
    a, b = rig.replicas
    rig.front.create_user("teacher", "aigul", "long-password-aigul", full_name="Aigul")
    with httpx.Client(base_url=rig.url, verify=rig.verify, timeout=30) as browser:
        start = len(rig.served_by())
        form = browser.get("/login")  # the login form's CSRF token: a cookie, no server state
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        r = browser.post("/login", data={"username": "aigul", "password": "long-password-aigul",
                                         "csrf_token": token, "next": "/api/v1/me"})
        assert r.status_code == 303, r.text
        session = dict(browser.cookies)
        for _ in range(6):  # nginx alternates: these land on A and on B
            me = browser.get("/api/v1/me")
            assert me.status_code == 200 and me.json()["person"]["username"] == "aigul"
        csrf = me.json()["csrf_token"]
        served = rig.served_by()[start:]
        assert {row[3] for row in served} == {a.address, b.address}
        assert all(row[2] in ("200", "303") for row in served), served
        for replica in rig.replicas:  # the same cookie on each replica directly: a row in the database
            with replica.client(cookies=session) as direct:
                assert direct.get("/api/v1/me").json()["csrf_token"] == csrf
        # A write with the session's CSRF token, then logged out on every replica at once.
        r = browser.post("/logout", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        for replica in rig.replicas:
            with replica.client(cookies=session) as direct:
                assert direct.get("/api/v1/me").status_code == 401


def test_the_periodic_checks_run_in_one_leader_and_move_when_it_dies(rig):
    time.sleep(2)  # a few rounds of the 1 s job
    now = time.time()
    runs = [rig.last_check_run(k) for k in range(2)]
    leading = [k for k, t in enumerate(runs) if now - t < 3]
    assert len(leading) == 1, f"expected one leader, last runs {runs} at {now}"
    leader, other = leading[0], 1 - leading[0]
    rig.kill(leader)
    killed = time.time()
    deadline = killed + 10
    while time.time() < deadline and rig.last_check_run(other) <= killed:
        time.sleep(0.2)
    assert rig.last_check_run(other) > killed, "the other replica never took the checks over"
    rig.replicas[leader].start()  # back, but not leading: the lock is held
    time.sleep(2)
    assert rig.last_check_run(leader) == 0.0
    assert time.time() - rig.last_check_run(other) < 3


def test_agents_of_a_killed_replica_reconnect_to_the_other_and_nothing_is_lost(rig, tmp_path):
    agents = [AgentProcess(tmp_path / f"agent-{k}") for k in range(4)]
    for k, agent in enumerate(agents):
        agent.enroll(rig.front, seat=f"seat-{k}", room="lab-1")
    ids: list[str] = []
    started = []
    try:
        for agent in agents:
            started.append(agent.start(collectors=["heartbeat"], heartbeat_s=1))
        for agent in agents:  # all streaming the policy through nginx
            agent.wait_status(lambda s: (s.get("policy") or {}).get("push_connected") is True, timeout=30)
        victim = max(range(2), key=rig.push_connections)  # the replica with more of them
        assert rig.push_connections(victim) >= 2
        for n in range(20):
            ids += [agent.emit("web.report", {"url": f"http://before-{n}.test/"}) for agent in agents]
        rig.kill(victim)  # its agents' streams and uploads break mid-way
        for n in range(20):
            ids += [agent.emit("web.report", {"url": f"http://after-{n}.test/"}) for agent in agents]
            time.sleep(0.05)
        version = rig.front.amend_policy("after the replica died", lambda b: b)
        for agent in agents:
            agent.wait_status(lambda s, v=version: (s.get("policy") or {}).get("version") == v, timeout=30)
            agent.wait_status(lambda s: s["outbox"]["depth"] == 0, timeout=60)
        with rig.front.db() as db:
            stored = db.scalars(select(Event.id).where(Event.id.in_(ids))).all()
        assert len(stored) == len(ids) == len(set(stored))  # none lost, none twice
    finally:
        for agent in started:
            agent.stop()
        for replica in rig.replicas:
            if not replica.running:
                replica.start()


def test_a_lesson_lock_through_replica_a_reaches_the_seat_and_the_teachers_live_page(rig):
    """The lesson's bundle reaches the seat's agent streaming from B, and the teacher's live
    seat map (SSE through nginx, on either replica) shows the lock made through A."""
    from datetime import timedelta

    from policy_server.people.service import get_person_by_username
    from policy_server.scope import viewer_for
    from policy_server.timetable.service import add_period

    a, b = rig.replicas
    rig.front.create_user("teacher", "nurlan", "long-password-nurlan", full_name="Nurlan")
    _, token = rig.front.enroll("lab1-s1", seat="s1", room="lab-1")
    with rig.front.db() as db:
        boss = viewer_for(db, get_person_by_username(db, "boss"))
        period = add_period(db, boss, **period_now(ago=timedelta(minutes=5), length=timedelta(minutes=45)),
                            room="lab-1", school_class="7-A", teacher="nurlan")
        db.commit()
        period_id = period.id
    with httpx.Client(base_url=a.url, verify=rig.verify, timeout=30) as first:
        r = first.post("/api/v1/login", json={"username": "nurlan", "password": "long-password-nurlan"})
        cookies, csrf = dict(first.cookies), r.json()["csrf_token"]
    on_a = httpx.Client(base_url=a.url, verify=rig.verify, timeout=30, cookies=cookies,
                        headers={"X-CSRF-Token": csrf})
    seat_stream = Stream(b.url, rig.verify, token)
    seats_events: list[tuple[float, str]] = []

    def live() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the rig stops at the end of the module
            read_live()

    def read_live() -> None:
        with httpx.Client(base_url=rig.url, verify=rig.verify, cookies=cookies,
                          timeout=httpx.Timeout(5, read=30)) as browser, \
                browser.stream("GET", f"/lessons/{lesson_id}/live") as r:
            data: list[str] = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    data.append(line[6:])
                elif not line and data:
                    seats_events.append((time.monotonic(), "\n".join(data)))
                    data = []
                    if len(seats_events) > 20:
                        return

    try:
        r = on_a.post("/api/v1/lessons", json={"period_id": period_id})
        assert r.status_code == 200, r.text
        lesson_id = r.json()["lesson_id"]
        threading.Thread(target=live, daemon=True).start()
        deadline = time.monotonic() + 10
        while not seats_events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seats_events and 'id="seat-s1"' in seats_events[0][1]
        assert " locked" not in seats_events[0][1]
        before = current_version(rig)
        sent = time.monotonic()
        r = on_a.post(f"/api/v1/lessons/{lesson_id}/lock", json={"seat": "s1", "message": "Stop"})
        assert r.status_code == 200, r.text
        version = current_version(rig)
        assert version > before
        heard = seat_stream.wait_version(version, 5)
        assert heard is not None and heard - sent < 1.0, "the seat's agent on B did not hear the lock in 1 s"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(" locked" in html for _, html in seats_events):
            time.sleep(0.05)
        shown = [at for at, html in seats_events if " locked" in html]
        assert shown and shown[0] - sent < 2.0, "the live seat map did not show the lock"
    finally:
        seat_stream.close()
        on_a.close()
