"""Agent upgrades from the console (policy_server/upgrades, agent/upgrade.py) with a real server
and real agent processes; the package step is a real `dpkg` of small test packages named
`kalkan-agent` into a scratch root per seat (`KALKAN_UPGRADE_DPKG_ROOT`), fetched by each agent
from the server's apt repository over its pinned connection.

* rolling: with one seat at a time, never two seats upgrading at once, each seat offered only
  after the one before reported; a seat whose room has a lesson is not offered until it ends;
* rollback: a version whose maintainer script fails leaves each seat on the version before, the
  server records "rolled back" with dpkg's reason, an `agent.upgrade` event is in the seat's
  history and the fleet page shows it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

import httpx
import pytest
from sqlalchemy import select

from policy_server.db.models import Event, Workstation, utcnow
from policy_server.upgrades.models import Rollout, RolloutSeat
from tests.support.agent_process import AgentProcess
from tests.support.server import KalkanServerProcess

PASSWORD = "upgrade-pass-7"
FAILS = "test: the new agent cannot configure"


def package(folder: Path, version: str, *, fail: bool = False) -> Path:
    tree = folder / f"tree-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "opt/kalkan-test").mkdir(parents=True)
    (tree / "opt/kalkan-test/VERSION").write_text(version + "\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: kalkan-agent\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: Kalkan tests <t@localhost>\nDescription: test package for the upgrade test\n")
    script = f'echo "{FAILS}" >&2; exit 1' if fail else "exit 0"
    (tree / "DEBIAN/postinst").write_text(f"#!/bin/sh\n{script}\n")
    (tree / "DEBIAN/postinst").chmod(0o755)
    out = folder / f"kalkan-agent_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True,
                   capture_output=True)
    return out


def scratch_root(path: Path, first: Path) -> Path:
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"):
        (path / d).mkdir(parents=True, exist_ok=True)
    (path / "var/lib/dpkg/status").touch()
    subprocess.run(["dpkg", "--root", str(path), "--force-script-chrootless", "--force-not-root", "-i",
                    str(first)], check=True, capture_output=True)
    return path


def installed(root: Path) -> str:
    return (root / "opt/kalkan-test/VERSION").read_text().strip()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    base = tmp_path_factory.mktemp("upgrades")
    debs = base / "debs"
    debs.mkdir()
    v1 = package(debs, "1.0")
    state = base / "server"
    (state / "packages").mkdir(parents=True)
    for version, fail in (("1.0", False), ("2.0", False), ("3.0", True)):
        package(state / "packages", version, fail=fail)
    with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
        server = KalkanServerProcess(state).start()
    server.create_user("admin", "rp.upgrades", PASSWORD)
    teacher = server.create_user("teacher", "t.upgrades", PASSWORD)
    agents, roots = {}, {}
    try:
        for seat, room in (("lab1-01", "lab-1"), ("lab1-02", "lab-1"), ("lab2-01", "lab-2")):
            roots[seat] = scratch_root(base / f"root-{seat}", v1)
            agent = AgentProcess(base / f"agent-{seat}")
            agent.enroll(server, seat=seat, room=room)
            with mock.patch.dict(os.environ, {"KALKAN_UPGRADE_DPKG_ROOT": str(roots[seat]),
                                              "KALKAN_UPGRADE_POLL_S": "0.5"}):
                agent.start(collectors=["heartbeat"], heartbeat_s=1)
            agents[seat] = agent
        yield server, agents, roots, teacher
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


def rollout(server, version: str, batch: int) -> int:
    from policy_server.operations import apt_repo
    from policy_server.settings import Settings
    from policy_server.upgrades.service import start_rollout

    with server.db() as db:
        r = start_rollout(db, actor="test", version=version, batch_size=batch,
                          available=apt_repo.versions(Settings(state_dir=server.state_dir)))
        db.commit()
        return r.id


def seats_of(server, rollout_id: int) -> dict[str, RolloutSeat]:
    with server.db() as db:
        rows = db.execute(select(Workstation.seat, RolloutSeat).join(
            RolloutSeat, RolloutSeat.agent_id == Workstation.id).where(RolloutSeat.rollout_id == rollout_id))
        return {seat: row for seat, row in rows}


def watch(server, rollout_id: int, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        rows = seats_of(server, rollout_id)
        seen.append(sum(1 for r in rows.values() if r.state == "offered"))
        time.sleep(0.05)


def wait(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_rolling_one_at_a_time_and_never_during_a_lesson(rig):
    server, agents, roots, teacher = rig
    import policy_server.timetable.models  # noqa: F401  (the lessons table's foreign keys)
    from policy_server.db.models import Room
    from policy_server.lessons.models import Lesson

    now = utcnow()
    with server.db() as db:  # a lesson runs in lab-2 now
        room = db.scalar(select(Room).where(Room.name == "lab-2"))
        db.add(Lesson(id="upgr-lesson", room_id=room.id, teacher_id=teacher, mode="open", scene="",
                      allow_list=[], allowed_sites=[], starts_at=now - timedelta(minutes=5),
                      ends_at=now + timedelta(minutes=40), planned_end=now + timedelta(minutes=40)))
        db.commit()
    rid = rollout(server, "2.0", 1)
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=watch, args=(server, rid, stop, seen), daemon=True)
    watcher.start()
    try:
        def both_upgraded():
            r = seats_of(server, rid)
            return r if all(s in r and r[s].state == "upgraded" for s in ("lab1-01", "lab1-02")) else None

        rows = wait("both lab-1 seats upgraded", both_upgraded)
        assert installed(roots["lab1-01"]) == installed(roots["lab1-02"]) == "2.0"
        first, second = sorted((rows["lab1-01"], rows["lab1-02"]), key=lambda r: r.offered_at)
        assert second.offered_at >= first.finished_at, "the second seat was offered before the first finished"
        time.sleep(2)  # several polls of the lab-2 seat during the lesson
        assert "lab2-01" not in seats_of(server, rid), "offered during a lesson in its room"
        assert installed(roots["lab2-01"]) == "1.0"
        with server.db() as db:  # the lesson ends
            db.get(Lesson, "upgr-lesson").ended_at = utcnow()
            db.commit()
        wait("the lab-2 seat upgraded after the lesson",
             lambda: (r := seats_of(server, rid).get("lab2-01")) is not None and r.state == "upgraded")
        assert installed(roots["lab2-01"]) == "2.0"
    finally:
        stop.set()
        watcher.join()
    assert max(seen) == 1, f"more than one seat upgrading at once: {max(seen)}"
    with server.db() as db:
        assert db.get(Rollout, rid).status == "done"


def shoot(page, artifacts: Path, name: str) -> None:
    url = page.url.split("?")[0]
    for language in ("ky", "ru", "en"):
        page.goto(f"{url}?lang={language}")
        for width, height in ((1366, 768), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(path=str(artifacts / f"{name}-{language}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1366, "height": 768})


def test_a_failing_version_rolls_back_and_the_fleet_page_says_why(rig, browser, artifacts_dir):
    server, agents, roots, _ = rig
    before = {s: installed(r) for s, r in roots.items()}
    assert set(before.values()) == {"2.0"}
    artifacts = artifacts_dir / "deploy"
    artifacts.mkdir(exist_ok=True)
    # the responsible person offers 3.0 from the console, three seats at a time (real Chromium)
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server.url + "/login?lang=en")
    page.fill("#username", "rp.upgrades")
    page.fill("#password", PASSWORD)
    page.click("form.card button[type=submit]")
    page.goto(server.url + "/upgrades?lang=en")
    page.fill("#f-batch_size", "0")
    page.click("form[action='/upgrades'] button[type=submit]")
    assert "from 1 to 50" in page.inner_text(".error-summary")
    page.select_option("#f-version", "3.0")
    page.fill("#f-batch_size", "3")
    page.click("form[action='/upgrades'] button[type=submit]")
    assert "a few at a time" in page.inner_text("main")
    with server.db() as db:
        rid = db.scalar(select(Rollout.id).where(Rollout.status == "running", Rollout.version == "3.0"))
    assert rid is not None
    rows = wait("every seat's result", lambda: (
        r if len(r) == 3 and all(x.state != "offered" for x in r.values()) else None
    ) if (r := seats_of(server, rid)) else None, timeout=90)
    for seat, row in rows.items():
        assert row.state == "rolled_back", (seat, row.state, row.reason)
        assert row.from_version == "2.0"
        assert row.reason_code == "install_failed"
        assert "post-installation script" in row.reason and FAILS in row.reason, row.reason
        assert installed(roots[seat]) == "2.0"
        status = subprocess.run(["dpkg-query", "--root", str(roots[seat]), "-W", "-f=${Status} ${Version}",
                                 "kalkan-agent"], capture_output=True, text=True).stdout
        assert status == "install ok installed 2.0"
    # the seat's history has the event (it went through the outbox)
    def upgrade_events():
        with server.db() as db:
            return [e.data for e in db.scalars(select(Event).where(Event.type == "agent.upgrade"))
                    if e.data.get("rollout") == rid]
    events = wait("the agent.upgrade events", lambda: (e if len(e := upgrade_events()) == 3 else None))
    assert {e["state"] for e in events} == {"rolled_back"}
    # the fleet page and the upgrades page show it, with the reason
    with httpx.Client(base_url=server.url, verify=server.verify, timeout=30) as web:
        login = web.get("/login?lang=en")
        token = login.text.split('name="csrf_token" value="')[1].split('"')[0]
        web.post("/login", data={"username": "rp.upgrades", "password": PASSWORD, "csrf_token": token,
                                 "next": "/fleet"})
        fleet = web.get("/fleet?lang=en")
        assert fleet.status_code == 200
        assert 'id="upgrade-failures"' in fleet.text and "went back to 2.0" in fleet.text
        assert FAILS in fleet.text and "the package manager failed" in fleet.text
        ru = web.get("/upgrades?lang=ru")
        assert ru.status_code == 200 and "lab1-01" in ru.text and FAILS in ru.text
        assert "возвращено к прежней версии" in ru.text and "ошибка менеджера пакетов" in ru.text
    page.goto(server.url + "/upgrades")
    shoot(page, artifacts, "upgrades")
    page.goto(server.url + "/fleet")
    shoot(page, artifacts, "fleet-upgrade-failures")
    context.close()


def test_a_rollout_started_on_the_console_reaches_a_seat_at_once(tmp_path):
    """The push: a seat that would poll only every 10 minutes is offered the new version within
    seconds of the responsible person starting the rollout on the console page (`event: upgrade`
    on its push channel, policies/push.py), and upgrades."""
    debs = tmp_path / "debs"
    debs.mkdir()
    first = package(debs, "1.0")
    state = tmp_path / "server"
    (state / "packages").mkdir(parents=True)
    package(state / "packages", "2.0")
    with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
        server = KalkanServerProcess(state).start()
    agent = AgentProcess(tmp_path / "agent")
    try:
        server.create_user("admin", "rp.push", PASSWORD)
        root = scratch_root(tmp_path / "root", first)
        agent.enroll(server, seat="lab9-01", room="lab-9")
        with mock.patch.dict(os.environ, {"KALKAN_UPGRADE_DPKG_ROOT": str(root),
                                          "KALKAN_UPGRADE_POLL_S": "600", "KALKAN_UPGRADE_JITTER_S": "0"}):
            agent.start(collectors=["heartbeat"], heartbeat_s=1)
        agent.wait_status(lambda s: s["policy"]["push_connected"])
        time.sleep(1)  # (its first poll, at start, is over: the next would be in 10 minutes)
        with server.login("rp.push", PASSWORD) as web:
            started = web.post("/upgrades", data={"csrf_token": web.headers["X-CSRF-Token"], "version": "2.0",
                                                  "batch_size": "3"})
            assert started.status_code == 303, started.text
        with server.db() as db:
            rid = db.scalar(select(Rollout.id).where(Rollout.status == "running"))
        wait("the seat offered the new version", lambda: seats_of(server, rid).get("lab9-01"), timeout=15)

        def upgraded() -> bool:
            row = seats_of(server, rid).get("lab9-01")
            return row is not None and row.state == "upgraded"

        wait("the seat upgraded", upgraded, timeout=60)
        assert installed(root) == "2.0"
    finally:
        agent.stop()
        server.stop()
