"""End to end on a real database (SQLite and PostgreSQL): agents report scans through the
ingest API, the register is filled through the service, an ISUO CSV export is imported.

The export holds one access by a login without an obligation, one after blocking, one at
22:00 and one from a seat whose last full scan is 9 days old → exactly four ISUO incidents
with the right clauses; the same file again adds nothing; a bad file stores nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from policy_server import protocol
from policy_server.db.models import AuditRecord, Incident, IsuoAccess, Person
from policy_server.isuo import checks, imports, service
from policy_server.isuo.findings import isuo_findings
from policy_server.isuo.models import IsuoRecord
from policy_server.isuo.rules import SCHOOL_TZ
from policy_server.scope import viewer_for

MAPPING = {
    "login": "Пользователь",
    "time": "Дата и время",
    "action": "Действие",
    "ip": "IP-адрес",
    "record_type": "Тип записи",
}


def _weekday_before(today: date, days_back: int) -> date:
    day = today - timedelta(days=days_back)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=SCHOOL_TZ)


@pytest.fixture
def school(api):
    """Two seats (07 scanned yesterday, 09 scanned 9 days before the day), three people."""
    day = _weekday_before(datetime.now(SCHOOL_TZ).date(), 2)
    a07, h07 = api.enroll("pc-07", seat="07")
    a09, h09 = api.enroll("pc-09", seat="09")
    full = {"scan_id": "s", "kind": "full", "files": 10, "bytes": 100, "threats": 0, "duration_s": 3.0}
    api.post(
        h07, protocol.make_event("av.scan.completed", full, occurred_at=local(day, 7) - timedelta(days=1))
    )
    api.post(
        h09, protocol.make_event("av.scan.completed", full, occurred_at=local(day, 7) - timedelta(days=9))
    )
    api.user("admin", "resp")
    with api.db() as db:
        viewer = viewer_for(db, db.scalar(select(Person).where(Person.username == "resp")))
        signed = service.save_user(
            db,
            viewer=viewer,
            full_name="Bekova Bermet",
            position="ISUO specialist",
            isuo_role="specialist",
            logins="b.bekova",
            order_number="12-k",
            order_date="2026-09-01",
        )
        service.record_obligation(
            db,
            viewer=viewer,
            user_id=signed.id,
            signed_on="2026-09-02",
            instructed_by="Director",
            scan=None,
            scan_name="",
            file_number="LD-17",
            state_dir=api.app.state.settings.state_dir,
        )
        service.save_user(
            db,
            viewer=viewer,
            full_name="Nurlanov Nurbek",
            position="teacher",
            isuo_role="teacher",
            logins="n.nurlanov",
        )
        blocked = service.save_user(
            db,
            viewer=viewer,
            full_name="Chorueva Cholpon",
            position="deputy",
            isuo_role="specialist",
            logins="c.chorueva, chorueva2",
        )
        service.record_obligation(
            db,
            viewer=viewer,
            user_id=blocked.id,
            signed_on="2026-09-02",
            instructed_by="Director",
            scan=b"%PDF-1.4 signed",
            scan_name="c.pdf",
            file_number="",
            state_dir=api.app.state.settings.state_dir,
        )
        service.block_user(
            db,
            viewer=viewer,
            user_id=blocked.id,
            blocked_on=(day - timedelta(days=1)).isoformat(),
            reason="order 15-k",
        )
        service.set_address(db, viewer=viewer, ip="10.35.1.7", seat="07")
        service.set_address(db, viewer=viewer, ip="10.35.1.9", seat="09")
        source = imports.save_source(db, name="ISUO web export", mapping=MAPPING, actor="resp")
        db.commit()
        return {"day": day, "source_id": source.id, "a07": a07, "a09": a09}


def export(day: date) -> bytes:
    rows = [
        "Пользователь;Дата и время;Действие;IP-адрес;Тип записи",
        f"b.bekova;{day:%d.%m.%Y} 09:00:00;login;10.35.1.7;session",  # fine
        f"b.bekova;{day:%d.%m.%Y} 09:05:00;view;10.35.1.7;student card",  # fine (same person, seat)
        f"n.nurlanov;{day:%d.%m.%Y} 10:00:00;login;10.35.1.7;session",  # 1: no obligation
        f"chorueva2;{day:%d.%m.%Y} 11:00:00;login;10.35.1.7;session",  # 2: after blocking
        f"b.bekova;{day:%d.%m.%Y} 22:00:00;login;10.35.1.7;session",  # 3: at 22:00
        f"b.bekova;{day:%d.%m.%Y} 12:00:00;login;10.35.1.9;session",  # 4: seat 09, scan 9 days old
    ]
    return ("\n".join(rows) + "\n").encode("cp1251")  # an export from a Windows machine


def isuo_incidents(db) -> list[Incident]:
    return list(db.scalars(select(Incident).where(Incident.rule.like("isuo.%")).order_by(Incident.rule)))


def test_four_findings_with_their_clauses_and_a_second_import_adds_nothing(api, school):
    day = school["day"]
    data = export(day)
    with api.db() as db:
        source = db.get(imports.IsuoSource, school["source_id"])
        result = imports.import_file(db, source=source, data=data, file_name="isuo.csv", actor="resp")
        db.commit()
    assert (result.rows_total, result.rows_new, result.matched_seats) == (6, 6, 6)
    with api.db() as db:
        found = {i.rule: i for i in isuo_incidents(db)}
        assert sorted(found) == [
            "isuo.after_blocked",
            "isuo.no_obligation",
            "isuo.noncompliant_seat",
            "isuo.outside_hours",
        ]
        assert found["isuo.no_obligation"].clauses == ["002 §4.4", "002 §5.1"]
        assert found["isuo.no_obligation"].params["login"] == "n.nurlanov"
        assert found["isuo.after_blocked"].clauses == ["002 §4.4", "002 §4.5"]
        assert found["isuo.after_blocked"].params["name"] == "Chorueva Cholpon"
        assert found["isuo.outside_hours"].clauses == ["000 §5.6", "000 §6.4"]
        assert found["isuo.outside_hours"].params["local_time"].endswith("22:00")
        seat = found["isuo.noncompliant_seat"]
        assert seat.clauses == ["000 §5.4"] and seat.seat == "09" and seat.agent_id == school["a09"]
        assert seat.params["problems"] == ["scan_overdue"] and 8.9 < seat.params["scan_age_days"] < 9.3
        assert db.scalar(select(func.count()).select_from(IsuoRecord)) == 6
        # reports' summary: the same four in the period
        start = datetime.combine(day, datetime.min.time(), SCHOOL_TZ)
        summary = isuo_findings(db, start=start, end=start + timedelta(days=1))
        assert summary.by_rule == {r: 1 for r in found} and summary.open == 4

    with api.db() as db:  # the same file again: nothing new, no new incident
        source = db.get(imports.IsuoSource, school["source_id"])
        again = imports.import_file(db, source=source, data=data, file_name="isuo-again.csv", actor="resp")
        db.commit()
        assert (again.rows_new, again.rows_duplicate, again.incidents) == (0, 6, 0)
        assert db.scalar(select(func.count()).select_from(IsuoRecord)) == 6
        assert len(isuo_incidents(db)) == 4
        # the periodic run over the same days adds nothing either
        assert checks.run_periodic(db, now=datetime.now(UTC), lookback=timedelta(days=15)) == []
        db.commit()
        assert len(isuo_incidents(db)) == 4
        assert (
            db.scalar(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "isuo.imported")
            )
            == 2
        )


def test_a_bad_row_rejects_the_whole_file_naming_line_and_fix(api, school):
    day = school["day"]
    data = export(day).decode("cp1251").splitlines()
    data.insert(3, f"x.user;{day:%d.%m.%Y} 25:99;login;10.35.1.7;session")
    data.append(f"y.user;{day:%d.%m.%Y} 09:00;login;10.35.1.300;session")
    with api.db() as db:
        source = db.get(imports.IsuoSource, school["source_id"])
        with pytest.raises(imports.ImportRejected) as caught:
            imports.import_file(
                db, source=source, data="\n".join(data).encode(), file_name="bad.csv", actor="resp"
            )
        db.rollback()
    problems = caught.value.problems
    assert [p.line for p in problems] == [4, 9]
    assert "not a date and time" in problems[0].problem and "2026-09-01 08:30:00" in problems[0].fix
    assert problems[1].params == {"value": "10.35.1.300"}
    with api.db() as db:
        assert db.scalar(select(func.count()).select_from(IsuoRecord)) == 0
        assert isuo_incidents(db) == []


def test_wrong_mapping_names_the_headers_found(api, school):
    with api.db() as db:
        source = imports.save_source(db, name="other", mapping={**MAPPING, "login": "User"}, actor="resp")
        with pytest.raises(imports.ImportRejected) as caught:
            imports.import_file(
                db, source=source, data=export(school["day"]), file_name="x.csv", actor="resp"
            )
    (problem,) = caught.value.problems
    assert problem.line == 1 and "Пользователь" in problem.params["found"]


def test_xlsx_import_and_proxy_session_overlap(api, school):
    from io import BytesIO

    from openpyxl import Workbook

    day = school["day"]
    with api.db() as db:  # the proxy on pc-07 saw a session 08:55-09:20
        db.add(
            IsuoAccess(
                source="proxy",
                agent_id=school["a07"],
                seat="07",
                host="emis.edu.gov.kg",
                started_at=local(day, 8, 55),
                ended_at=local(day, 9, 20),
            )
        )
        db.commit()
    book = Workbook()
    sheet = book.active
    sheet.append(list(MAPPING.values()))
    sheet.append(["B.Bekova", local(day, 9, 0).replace(tzinfo=None), "login", "10.35.1.7", "session"])
    sheet.append(["b.bekova", local(day, 9, 30).replace(tzinfo=None), "view", "10.35.1.7", "session"])
    buffer = BytesIO()
    book.save(buffer)
    with api.db() as db:
        source = db.get(imports.IsuoSource, school["source_id"])
        result = imports.import_file(
            db, source=source, data=buffer.getvalue(), file_name="isuo.xlsx", actor="resp"
        )
        db.commit()
        assert result.rows_new == 2 and result.incidents == 0
        linked = dict(db.execute(select(IsuoRecord.action, IsuoRecord.proxy_access_id)).all())
        assert linked["login"] is not None and linked["view"] is None  # 09:30 is after the session


def test_import_gap_and_overdue_review_from_the_periodic_check(api, school):
    day = school["day"]
    previous = day - timedelta(days=1)
    with api.db() as db:
        # the proxy saw ISUO on the day before and on the day; the export covers the two days
        # before and the day but holds no record of the day before → a gap on that day
        for d in (previous, day):
            db.add(
                IsuoAccess(
                    source="proxy",
                    agent_id=school["a07"],
                    seat="07",
                    host="emis.edu.gov.kg",
                    started_at=local(d, 9),
                    ended_at=local(d, 9, 30),
                )
            )
        source = db.get(imports.IsuoSource, school["source_id"])
        body = (
            "Пользователь;Дата и время;Действие;IP-адрес;Тип записи\n"
            f"b.bekova;{previous - timedelta(days=1):%d.%m.%Y} 09:00:00;logout;;session\n"
            f"b.bekova;{day:%d.%m.%Y} 09:00:00;login;10.35.1.7;session\n"
        )
        imports.import_file(db, source=source, data=body.encode(), file_name="gap.csv", actor="resp")
        admin = viewer_for(db, db.scalar(select(Person).where(Person.username == "resp")))
        service.set_review_due_on(db, viewer=admin, due_on=(day - timedelta(days=1)).isoformat())
        db.commit()
        new = checks.run_periodic(db, now=datetime.now(UTC), lookback=timedelta(days=15))
        db.commit()
        rules_found = sorted(d.rule for d in new)
        assert "isuo.import_gap" in rules_found and "isuo.review_overdue" in rules_found
        gap = db.scalar(select(Incident).where(Incident.rule == "isuo.import_gap"))
        assert gap.params == {"day": previous.isoformat(), "sessions": 1}
        assert gap.clauses == ["000 §5.6", "000 §3.2"]
        overdue = db.scalar(select(Incident).where(Incident.rule == "isuo.review_overdue"))
        assert overdue.clauses == ["002 §4.5", "002 §4.4"]
        assert checks.run_periodic(db, now=datetime.now(UTC), lookback=timedelta(days=15)) == []


def test_findings_api_for_reports(api, school):
    with api.db() as db:
        source = db.get(imports.IsuoSource, school["source_id"])
        imports.import_file(db, source=source, data=export(school["day"]), file_name="isuo.csv", actor="resp")
        db.commit()
    headers = api.login("resp")
    day = school["day"]
    answer = api.client.get(
        f"/api/v1/isuo/findings?start={day}&end={day + timedelta(days=1)}", headers=headers
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["open"] == 4 and set(body["by_rule"]) == {
        "isuo.no_obligation",
        "isuo.after_blocked",
        "isuo.outside_hours",
        "isuo.noncompliant_seat",
    }
    assert "login" not in str(body["findings"])  # no logins or names in the summary
    bad = api.client.get("/api/v1/isuo/findings?start=yesterday&end=2026-01-01", headers=headers)
    assert bad.status_code == 422 and "2026-11-01" in bad.json()["detail"]
    api.user("teacher", "t1")
    api.login("t1")
    assert api.client.get(f"/api/v1/isuo/findings?start={day}&end={day}").status_code == 403


def test_a_failure_after_the_rows_are_written_leaves_nothing(api, school, monkeypatch):
    """One transaction: if anything fails after the records were inserted (here the checks),
    the import row, the records and the audit record are all rolled back."""

    def broken(db, accesses):
        raise RuntimeError("checks failed")

    monkeypatch.setattr(checks, "check_new_accesses", broken)
    with api.db() as db:
        source = db.get(imports.IsuoSource, school["source_id"])
        with pytest.raises(RuntimeError):
            imports.import_file(
                db, source=source, data=export(school["day"]), file_name="x.csv", actor="resp"
            )
        db.rollback()
    with api.db() as db:
        assert db.scalar(select(func.count()).select_from(IsuoRecord)) == 0
        assert db.scalar(select(func.count()).select_from(imports.IsuoImport)) == 0
        assert (
            db.scalar(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "isuo.imported")
            )
            == 0
        )


def test_records_from_a_student_lab_outside_a_lesson(api, school):
    """lab-1 is a student lab; a lesson runs there 11:30-12:30 only: the 12:00 record at seat 09
    is inside the lesson, the others are outside it → one student-lab finding for seat 07."""
    from policy_server.lessons.models import Lesson
    from policy_server.policies.service import amend_policy
    from policy_server.school.service import find_room

    day = school["day"]

    def lab(bundle):
        bundle.isuo.student_lab_rooms = ["lab-1"]
        return bundle

    with api.db() as db:
        amend_policy(db, actor="test", comment="lab-1 is a student lab", change=lab)
        teacher = db.scalar(select(Person).where(Person.username == "resp"))
        db.add(
            Lesson(
                id="les-1",
                room_id=find_room(db, "lab-1").id,
                teacher_id=teacher.id,
                starts_at=local(day, 11, 30),
                ends_at=local(day, 12, 30),
                planned_end=local(day, 12, 30),
            )
        )
        source = db.get(imports.IsuoSource, school["source_id"])
        imports.import_file(db, source=source, data=export(day), file_name="isuo.csv", actor="resp")
        db.commit()
        found = list(db.scalars(select(Incident).where(Incident.rule == "isuo.student_lab")))
    assert [(i.seat, i.params["why"], i.params["source"]) for i in found] == [
        ("07", "student_lab_no_lesson", "import")
    ]
