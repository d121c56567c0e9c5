"""Stateful checks against the real database (SQLite and PostgreSQL): the baseline chain and
ISUO in a student lab at ingest; weekly scan overdue, storage during ISUO and ISUO left
unlocked as periodic checks; the scheduler inside the app; `kalkan-server run-checks`."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from policy_server import protocol
from policy_server.app import create_app
from policy_server.checks.periodic import (
    check_isuo_left_unlocked,
    check_overdue_full_scans,
    check_storage_during_isuo,
)
from policy_server.checks.scheduler import CheckScheduler, Job
from policy_server.db.models import Incident, IncidentEvent, TimelineEntry, Workstation, utcnow
from policy_server.settings import Settings

STICK = {"vendor_id": "0781", "product_id": "5567", "serial": "S1", "kinds": ["storage"]}
KEYBOARD = {"vendor_id": "046d", "product_id": "c31c", "kinds": ["hid"]}


def ev(type_: str, data: dict, at: datetime, os_user: str | None = "teacher1") -> protocol.EventEnvelope:
    return protocol.make_event(type_, data, occurred_at=at,
                               subject=protocol.Subject(os_user=os_user, seat="seat-1"))


def baseline(at: datetime, digest: str, prev: str | None, reason: str,
             seq: int = 0) -> protocol.EventEnvelope:
    return ev("integrity.baseline", {"digest": digest, "files": 10, "seq": seq, "prev_digest": prev,
                                     "reason": reason}, at, os_user=None)


def isuo(at: datetime, state: str, started: datetime,
         ended: datetime | None = None) -> protocol.EventEnvelope:
    return ev("isuo.session", {"host": "emis.edu.gov.kg", "state": state, "started_at": started.isoformat(),
                               "ended_at": ended.isoformat() if ended else None}, at)


def usb(at: datetime, device: dict, type_: str = "usb.connected") -> protocol.EventEnvelope:
    return ev(type_, {"device": device}, at)


def heartbeat(at: datetime) -> protocol.EventEnvelope:
    return ev("agent.heartbeat", {"agent_version": "1", "uptime_s": 5}, at, os_user=None)


def incidents(api, rule: str | None = None) -> list[Incident]:
    with api.db() as db:
        query = select(Incident).order_by(Incident.id)
        if rule:
            query = query.where(Incident.rule == rule)
        return list(db.scalars(query))


def linked(api, incident_id: int) -> set[str]:
    with api.db() as db:
        return set(db.scalars(select(IncidentEvent.event_id).where(IncidentEvent.incident_id == incident_id)))


def run(api, check, now: datetime | None = None) -> int:
    with api.db() as db:
        drafts = check(db, now=now or utcnow())
        db.commit()
    return len(drafts)


def amend(api, change) -> None:
    from policy_server.policies.service import amend_policy

    with api.db() as db:
        amend_policy(db, actor="test", comment="test", change=change)
        db.commit()


# ----------------------------------------------------------------------------- ingest


def test_baseline_chain_is_checked_at_ingest(api):
    _, auth = api.enroll()
    t = utcnow() - timedelta(hours=5)
    # first baseline, a new version naming it, then a verification in the same batch: a chain
    api.post(auth, baseline(t, "A", None, "created"))
    api.post(auth, baseline(t + timedelta(hours=1), "B", "A", "accepted", 1),
             baseline(t + timedelta(hours=2), "B", "A", "verified", 1))
    assert incidents(api, "integrity.chain_broken") == []
    # a verification of a digest the server never saw: the baseline was replaced
    replaced = baseline(t + timedelta(hours=3), "X", "B", "verified", 1)
    api.post(auth, replaced)
    (incident,) = incidents(api, "integrity.chain_broken")
    assert incident.severity == "critical" and incident.clauses == ["000 §4.2", "000 §5.6"]
    assert incident.params["expected"] == "B" and incident.params["found"] == "X"
    assert linked(api, incident.id) == {str(replaced.id)}
    # a new version that names a digest that is not the last one: broken again (same incident, a day)
    api.post(auth, baseline(t + timedelta(hours=4), "Z", "Q", "created", 2))
    (incident,) = incidents(api, "integrity.chain_broken")
    assert incident.event_count == 2
    # another workstation's chain is its own: its first baseline is never "broken"
    _, other = api.enroll(hostname="pc-02", seat="seat-2")
    api.post(other, baseline(t, "K", None, "created"))
    assert incidents(api, "integrity.chain_broken")[0].event_count == 2


def test_isuo_in_a_student_lab_is_checked_at_ingest(api):
    agent_id, auth = api.enroll(room="lab-1")
    _, office = api.enroll(hostname="pc-02", seat="seat-2", room="office")
    amend(api, lambda b: (setattr(b.isuo, "student_lab_rooms", ["lab-1"]), b)[1])
    now = utcnow()
    start = isuo(now, "start", now)
    api.post(auth, start)
    api.post(office, isuo(now, "start", now))  # not a student lab
    (incident,) = incidents(api, "isuo.student_lab")
    assert incident.agent_id == agent_id and incident.params["room"] == "lab-1"
    assert linked(api, incident.id) == {str(start.id)}
    # during a lesson in that room it is the teacher's work: no new count
    amend(api, lambda b: b.model_copy(update={"lessons": [protocol.Lesson(
        id="l1", room="lab-1", teacher="aigul", starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(minutes=40))]}))
    api.post(auth, isuo(now + timedelta(minutes=1), "start", now + timedelta(minutes=1)))
    assert incidents(api, "isuo.student_lab")[0].event_count == 1


# ----------------------------------------------------------------------------- weekly scan


def _age(api, agent_id: str, days: int) -> None:
    with api.db() as db:
        db.execute(update(Workstation).where(Workstation.id == agent_id)
                   .values(enrolled_at=utcnow() - timedelta(days=days)))
        db.commit()


def scan(at: datetime, kind: str = "full") -> protocol.EventEnvelope:
    return ev("av.scan.completed", {"scan_id": "s", "kind": kind, "files": 10, "bytes": 1, "threats": 0,
                                    "duration_s": 1.0}, at, os_user=None)


def test_weekly_scan_overdue_once_per_week_per_workstation(api):
    now = utcnow()
    fresh_scan, fresh_auth = api.enroll(hostname="fresh-scan", seat="s1")
    old_scan, old_auth = api.enroll(hostname="old-scan", seat="s2")
    never, _ = api.enroll(hostname="never", seat="s3")
    new_pc, _ = api.enroll(hostname="new-pc", seat="s4")
    retired, _ = api.enroll(hostname="retired", seat="s5")
    for agent_id in (fresh_scan, old_scan, never, retired):
        _age(api, agent_id, 30)
    api.post(fresh_auth, scan(now - timedelta(days=2)))
    api.post(old_auth, scan(now - timedelta(days=9)), scan(now - timedelta(days=1), kind="media"))
    with api.db() as db:
        db.execute(update(Workstation).where(Workstation.id == retired).values(token_revoked=True))
        db.commit()

    assert run(api, check_overdue_full_scans, now) == 2
    found = {i.agent_id: i for i in incidents(api, "av.full_scan_overdue")}
    assert set(found) == {old_scan, never}  # not the scanned, the new or the revoked one
    assert found[old_scan].params["days"] == 9.0 and found[never].params["last_full_scan"] is None
    assert found[old_scan].seat == "s2" and found[old_scan].clauses == ["000 §5.4"]
    with api.db() as db:
        overdue_ids = [i.id for i in found.values()]
        # an absence links no event (other incidents, e.g. from the uploads above, may)
        linked = select(IncidentEvent.event_id).where(IncidentEvent.incident_id.in_(overdue_ids))
        assert db.scalar(linked) is None
        opened = db.scalar(select(TimelineEntry.detail).where(TimelineEntry.action == "opened",
                                                              TimelineEntry.incident_id.in_(overdue_ids)))
        assert opened["event_id"] is None
    # the next rounds add nothing: one incident a week, not one more count an hour
    assert run(api, check_overdue_full_scans, now + timedelta(hours=1)) == 0
    assert [i.event_count for i in incidents(api, "av.full_scan_overdue")] == [1, 1]
    # the week is over and still no scan: a new incident
    assert run(api, check_overdue_full_scans, now + timedelta(days=8)) >= 2


# ----------------------------------------------------------------------------- ISUO periodic


def test_storage_during_or_right_after_isuo(api):
    agent_id, auth = api.enroll()
    t = utcnow() - timedelta(hours=2)
    end = t + timedelta(minutes=30)
    stick_during = usb(t + timedelta(minutes=5), STICK)
    stick_after = usb(end + timedelta(minutes=8), STICK, "usb.allowed")
    api.post(auth, isuo(t, "start", t), stick_during, usb(t + timedelta(minutes=6), KEYBOARD),
             isuo(end, "end", t, end), usb(end + timedelta(minutes=30), STICK))
    api.post(auth, stick_after)  # a later upload
    assert run(api, check_storage_during_isuo) == 2  # two drafts, one incident for the session
    (incident,) = incidents(api, "isuo.storage")
    assert incident.agent_id == agent_id and incident.event_count == 2 and incident.severity == "high"
    assert linked(api, incident.id) == {str(stick_during.id), str(stick_after.id)}
    assert run(api, check_storage_during_isuo) == 0  # reported once
    assert len(incidents(api, "isuo.storage")) == 1


def test_isuo_session_left_unlocked(api):
    _, locked_auth = api.enroll(hostname="locked", seat="s1")
    unlocked_id, unlocked_auth = api.enroll(hostname="unlocked", seat="s2")
    _, silent_auth = api.enroll(hostname="silent", seat="s3")
    t = utcnow() - timedelta(hours=1)
    end = t + timedelta(minutes=20)
    session = [isuo(t, "start", t), isuo(end, "end", t, end)]
    lock = ev("idle.locked", {"idle_s": 0, "timeout_s": 120, "reason": "isuo_end"},
              end + timedelta(seconds=3))
    api.post(locked_auth, *session, lock, heartbeat(end + timedelta(minutes=10)))
    start = isuo(t, "start", t)
    api.post(unlocked_auth, start, isuo(end, "end", t, end), heartbeat(end + timedelta(minutes=10)))
    api.post(silent_auth, isuo(t, "start", t), isuo(end, "end", t, end))  # nothing after: not judged yet

    assert run(api, check_isuo_left_unlocked) == 1
    (incident,) = incidents(api, "isuo.unlocked")
    assert incident.agent_id == unlocked_id and incident.params["where"] == "s2"
    assert incident.clauses == ["000 §6.8", "000 §6.7"]
    assert linked(api, incident.id) == {str(start.id)}
    # the silent agent reports later, still without a lock: now it is judged
    api.post(silent_auth, heartbeat(end + timedelta(minutes=15)))
    assert run(api, check_isuo_left_unlocked) == 1
    assert run(api, check_isuo_left_unlocked) == 0
    assert len(incidents(api, "isuo.unlocked")) == 2


# ----------------------------------------------------------------------------- scheduler, app, CLI


def test_scheduler_logs_a_failing_job_and_runs_it_again(api, caplog):
    calls: list[str] = []

    def flaky(db, now):
        calls.append("x")
        if len(calls) == 1:
            raise RuntimeError("database went away")

    job = Job(name="flaky", interval_s=0.05, run=flaky)
    other = Job(name="other", interval_s=0.05, run=lambda db, now: calls.append("other"))
    scheduler = CheckScheduler(api.app.state.sessionmaker, [job, other], first_delay_s=0)

    async def go():
        await scheduler.start()
        for _ in range(100):
            if job.runs >= 3:
                break
            await asyncio.sleep(0.02)
        await scheduler.stop()

    asyncio.run(go())
    assert job.failures == 1 and job.runs >= 3 and job.last_error is None
    assert "other" in calls  # the failure did not stop the other job
    assert "periodic check flaky failed" in caplog.text and "database went away" in caplog.text


def test_server_runs_the_checks_itself(db_url: str, tmp_path: Path):
    settings = Settings(state_dir=tmp_path / "state", db_url=db_url, tls=False, checks_interval_s=0.2,
                        isuo_checks_interval_s=0.2, checks_first_delay_s=0)
    app = create_app(settings)
    with TestClient(app) as client:
        from tests.server.conftest import Api

        api = Api(client=client, app=app)
        agent_id, _ = api.enroll()
        _age(api, agent_id, 30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not incidents(api, "av.full_scan_overdue"):
            time.sleep(0.1)
        (incident,) = incidents(api, "av.full_scan_overdue")
        assert incident.agent_id == agent_id
        assert all(job.failures == 0 for job in app.state.checks.jobs)
    assert app.state.checks._task is None  # stopped with the app


def test_run_checks_command(api, db_url: str, tmp_path: Path, capsys):
    from policy_server.cli import main

    agent_id, _ = api.enroll()
    _age(api, agent_id, 30)
    args = ["--db", db_url, "--state-dir", str(tmp_path / "cli-state")]
    assert main(["run-checks", *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"av.full_scan_overdue": 1, "isuo.storage": 0,
                                                   "isuo.unlocked": 0, "isuo.cross": 0}
    assert main(["run-checks", *args, "--only", "av.full_scan_overdue"]) == 0
    assert "av.full_scan_overdue: 0 new finding(s)" in capsys.readouterr().out
    assert main(["run-checks", *args, "--only", "nope"]) == 2
    assert "unknown check nope" in capsys.readouterr().err
    # student labs: shown, set, refused for an unknown room
    assert main(["student-labs", *args, "lab-1"]) == 0
    assert main(["student-labs", *args]) == 0
    assert capsys.readouterr().out.strip().endswith("lab-1")
    assert main(["student-labs", *args, "gym"]) == 2
    assert "no room named gym" in capsys.readouterr().err
