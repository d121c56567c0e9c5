"""Fleet health (N of M per control, failing seats first), a seat's page, the approvals queue
(USB allow by model, integrity accepted per package through amend_policy), the audit log."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from policy_server.db.models import Incident
from policy_server.fleet import service as fleet
from policy_server.fleet.models import ControlChange
from policy_server.policies.service import current_bundle
from tests.console.conftest import add_event
from tests.web.conftest import csrf_of, login

OK = {"state": "ok", "detail": ""}


def _health(**parts) -> dict:
    collectors = {name: OK for name in ("proxy", "antivirus", "integrity", "usb", "idle")}
    collectors.update(parts)
    return {"collectors": collectors, "policy_version": None}


def _event(school, agent_id, type_, data, *, at=None, incident_rule=None) -> str:
    return add_event(school, agent_id, type_, data, at=at, rule=incident_rule)[0]


def test_fleet_counts_and_orders(client, school):
    now = datetime.now(UTC)
    good = school.workstation(
        hostname="pc-good", room="Lab F", seat="f-01", last_seen_at=now, health=_health()
    )
    av_down = school.workstation(
        hostname="pc-av",
        room="Lab F",
        seat="f-02",
        last_seen_at=now,
        health=_health(antivirus={"state": "failed", "detail": "antivirus not working: clamd_unreachable"}),
    )
    silent = school.workstation(
        hostname="pc-silent",
        room="Lab F",
        seat="f-03",
        last_seen_at=now - timedelta(hours=30),
        health=_health(),
    )
    for agent in (good, silent):
        _event(
            school,
            agent,
            "av.scan.completed",
            {"scan_id": "s", "kind": "full", "files": 10, "bytes": 1, "threats": 0, "duration_s": 3.0},
        )
        _event(school, agent, "integrity.baseline", {"digest": "d", "files": 3, "seq": 1})
    _event(school, av_down, "integrity.baseline", {"digest": "d", "files": 3, "seq": 1})
    # the silent seat has been failing for more than a day: its first change is recorded then
    with school.session() as db:
        db.add(
            ControlChange(
                agent_id=silent, control="reporting", passing=False, at=now - timedelta(days=2), detail={}
            )
        )
        db.commit()
    login(client, school.person("admin"))
    page = client.get("/fleet?lang=en")
    assert page.status_code == 200
    text = page.text
    assert "passes on 2 of 3 seats" in text  # reporting: good and av_down; antivirus: good and silent
    assert text.index("pc-silent") < text.index("pc-av") < text.index("pc-good")  # failing > 1 day first
    assert "The antivirus service (clamd) does not answer." in text
    assert "more than a day" in text
    ru = client.get("/fleet?lang=ru").text
    assert "Служба антивируса (clamd) не отвечает." in ru or "clamd" in ru
    # the seat's page: the proof event of the weekly full scan (000 §5.4), and the history
    seat = client.get(f"/fleet/seats/{good}?lang=en")
    assert "proof event" in seat.text and "000 §5.4" in seat.text
    proof = seat.text.split('href="/fleet/events/')[1].split('"')[0]
    event_page = client.get(f"/fleet/events/{proof}?lang=en")
    assert "full scan: 10 files, 0 threats" in event_page.text and "None" not in event_page.text
    # a heartbeat change turns the antivirus control green: one change row, not one per visit
    with school.session() as db:
        from policy_server.db.models import Workstation

        db.get(Workstation, av_down).health = _health()
        db.commit()
    _event(
        school,
        av_down,
        "av.scan.completed",
        {"scan_id": "s2", "kind": "full", "files": 5, "bytes": 1, "threats": 0, "duration_s": 1.0},
    )
    client.get("/fleet")
    client.get("/fleet")
    with school.session() as db:
        changes = list(
            db.scalars(
                select(ControlChange.passing).where(
                    ControlChange.agent_id == av_down, ControlChange.control == "antivirus"
                )
            )
        )
        assert changes == [False, True]
    assert "passes on 3 of 3 seats" in client.get("/fleet?lang=en").text  # antivirus now on all three


def test_fleet_service_reads_no_more_than_a_week_of_scans(school):
    with school.session() as db:
        facts = fleet.gather_facts(db, ["nobody"], now=datetime.now(UTC) + timedelta(days=30))
        assert facts.full_scans == {}


def test_approvals_usb_and_integrity(client, school):
    now = datetime.now(UTC)
    agent = school.workstation(
        hostname="pc-app", room="Lab A", seat="a-01", last_seen_at=now, health=_health()
    )
    device = {
        "vendor_id": "0781",
        "product_id": "5567",
        "serial": "ABC123",
        "manufacturer": "SanDisk",
        "product": "Cruzer Blade",
        "kinds": ["storage"],
    }
    usb_event = _event(
        school,
        agent,
        "usb.blocked",
        {"device": device, "reason": "not on the allow-list"},
        incident_rule="usb.blocked",
    )
    changed = [
        _event(
            school,
            agent,
            "integrity.changed",
            {
                "path": f"/usr/bin/tool{i}",
                "change": "modified",
                "package": "coreutils",
                "by_package_manager": True,
                "new_sha256": "a" * 64,
            },
            incident_rule="integrity.package_update",
        )
        for i in range(3)
    ]
    odd = _event(
        school,
        agent,
        "integrity.changed",
        {"path": "/usr/local/bin/odd", "change": "added", "new_sha256": "b" * 64},
    )
    login(client, school.person("admin"))
    page = client.get("/approvals?lang=en")
    assert "Cruzer Blade" in page.text and "Package update: coreutils" in page.text
    assert "Changes no package explains" in page.text
    token = csrf_of(page.text)
    allowed = client.post(
        "/approvals/usb",
        data={"csrf_token": token, "event_id": usb_event, "decision": "model"},
        follow_redirects=False,
    )
    assert allowed.status_code == 303 and "done=usb_model" in allowed.headers["location"]
    accepted = client.post(
        "/approvals/integrity", data={"csrf_token": token, "event_ids": changed}, follow_redirects=False
    )
    assert accepted.status_code == 303
    with school.session() as db:
        bundle = current_bundle(db)
        assert any(a.vendor_id == "0781" and a.serial is None for a in bundle.usb.allow)
        assert {a.path for a in bundle.integrity.accepted} >= {f"/usr/bin/tool{i}" for i in range(3)}
        open_rules = set(
            db.scalars(select(Incident.rule).where(Incident.agent_id == agent, Incident.status != "resolved"))
        )
        assert open_rules == set()
    after = client.get("/approvals?lang=en").text
    assert "Cruzer Blade" not in after and "coreutils" not in after and "/usr/local/bin/odd" in after
    assert odd
    # audit log: filter and CSV
    log = client.get("/audit?what=policy&lang=en")
    assert log.status_code == 200
    csv_text = client.get("/audit.csv?what=person.").text.lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(csv_text)))
    assert rows[0][:5] == ["at_utc", "actor", "action", "target", "detail"]  # stable machine columns
    assert all(r[2].startswith("person.") for r in rows[1:])
    assert len(rows[0]) == 7 and all(r[5] and r[5] != r[2] for r in rows[1:])  # the action, for a person
    bad_date = client.get("/audit?since=yesterday&lang=en")
    assert bad_date.status_code == 200 and "YYYY-MM-DD" in bad_date.text


def test_the_periodic_job_notes_changes_without_a_page(school):
    from policy_server.settings import Settings

    (job,) = fleet.fleet_jobs(Settings(checks_interval_s=3600))
    assert fleet.fleet_jobs(Settings(checks_interval_s=0)) == []
    agent = school.workstation(
        hostname="pc-job", room="Lab J", seat="j-01", last_seen_at=datetime.now(UTC), health=_health()
    )
    with school.session() as db:
        job.run(db, datetime.now(UTC))
    with school.session() as db:
        assert (
            db.scalar(
                select(ControlChange.passing).where(
                    ControlChange.agent_id == agent, ControlChange.control == "reporting"
                )
            )
            is True
        )
