"""Class-based scope on incidents (docs/security.md "Roles and scopes"): a teacher sees the
incidents of their rooms AND of the classes they teach — an incident that began in any room
during a timetable period of their class (the students at the seats then are that class's;
the seating plan names them) — in the JSON API and on the pages alike (one service), and
nothing of another class in the same room.  A real server process."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from policy_server import protocol
from tests.support.server import KalkanServerProcess

PASSWORD = "class-scope-password-1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from policy_server.db.models import Incident
    from policy_server.people.service import get_person_by_username
    from policy_server.scope import Viewer
    from policy_server.timetable.service import SCHOOL_TZ, add_period

    with KalkanServerProcess(tmp_path_factory.mktemp("class-scope"), tls=False) as server:
        agent_c, token_c = server.enroll("pc-c", seat="c-01", room="Room C")
        server.enroll("pc-a", seat="a-01", room="Room A")
        server.create_user("teacher", "form-teacher", PASSWORD)  # teaches 7-A in Room A only
        server.create_user("teacher", "it-teacher", PASSWORD)  # teaches 7-A and 8-B in Room C
        server.create_user("director", "head", PASSWORD)
        yesterday = (datetime.now(SCHOOL_TZ) - timedelta(days=1)).replace(second=0, microsecond=0)
        other_day = (yesterday.weekday() + 3) % 7
        with server.db() as db:
            system = Viewer.system()
            add_period(db, system, weekday=other_day + 1, starts="09:00", ends="09:45", room="Room A",
                       school_class="7-A", teacher="form-teacher")
            add_period(db, system, weekday=yesterday.weekday() + 1, starts="00:00", ends="11:59",
                       room="Room C",
                       school_class="7-A", teacher="it-teacher")
            add_period(db, system, weekday=yesterday.weekday() + 1, starts="12:00", ends="23:59",
                       room="Room C",
                       school_class="8-B", teacher="it-teacher")
            assert get_person_by_username(db, "form-teacher") is not None
            db.commit()
        at_7a = yesterday.replace(hour=6, minute=0)
        at_8b = yesterday.replace(hour=18, minute=0)
        with server.agent_client(token_c) as agent:
            for when, who in ((at_7a, "pupil-of-7a"), (at_8b, "pupil-of-8b")):
                event = protocol.make_event("web.report", {"url": f"http://site-{who[-2:]}.example/page"},
                                            subject=protocol.Subject(os_user=who, seat="c-01"),
                                            occurred_at=when)
                answer = agent.post("/api/v1/events", json={"events": [event.model_dump(mode="json")]})
                assert answer.status_code == 200 and answer.json()["accepted"], answer.text
        with server.db() as db:
            ids = {incident.os_user: incident.id for incident in db.scalars(
                select(Incident).where(Incident.agent_id == agent_c, Incident.rule == "web.report"))}
        yield server, ids["pupil-of-7a"], ids["pupil-of-8b"]


def test_the_incident_knows_its_class_from_the_timetable(world):
    from policy_server.db.models import Incident, SchoolClass

    server, of_7a, of_8b = world
    with server.db() as db:
        names = dict(db.execute(select(Incident.id, SchoolClass.name)
                                .join(SchoolClass, SchoolClass.id == Incident.class_id)).all())
    assert names == {of_7a: "7-A", of_8b: "8-B"}


def test_a_teacher_of_the_class_sees_its_incidents_in_another_room_in_the_api(world):
    server, of_7a, of_8b = world
    with server.login("form-teacher", PASSWORD) as teacher:
        listed = teacher.get("/api/v1/incidents").json()
        assert [i["id"] for i in listed["incidents"]] == [of_7a] and listed["total"] == 1
        one = teacher.get(f"/api/v1/incidents/{of_7a}")
        assert one.status_code == 200 and one.json()["os_user"] == "pupil-of-7a"  # a teacher sees the name
        assert teacher.get(f"/api/v1/incidents/{of_8b}").status_code == 404
        assert "pupil-of-8b" not in teacher.get("/api/v1/incidents?status=new").text


def test_the_pages_show_the_same(world):
    server, of_7a, of_8b = world
    with server.login("form-teacher", PASSWORD) as teacher:
        listing = teacher.get("/incidents")
        assert listing.status_code == 200
        linked = {int(n) for n in re.findall(r'href="/incidents/(\d+)"', listing.text)}
        assert of_7a in linked and of_8b not in linked
        assert teacher.get(f"/incidents/{of_7a}").status_code == 200
        assert teacher.get(f"/incidents/{of_8b}").status_code == 404


def test_the_rooms_teacher_sees_both_classes_and_the_director_both_without_names(world):
    server, of_7a, of_8b = world
    with server.login("it-teacher", PASSWORD) as teacher:
        assert {i["id"] for i in teacher.get("/api/v1/incidents").json()["incidents"]} >= {of_7a, of_8b}
    with server.login("head", PASSWORD) as director:
        answer = director.get("/api/v1/incidents")
        assert {of_7a, of_8b} <= {i["id"] for i in answer.json()["incidents"]}
        assert "pupil-of" not in answer.text  # the OS user names stay hidden from the director


def test_a_students_own_account_names_the_class_before_the_timetable(world):
    """A lab with a login per student maps each account to its class (`student_accounts`): an
    incident of that account belongs to that class even during another class's period, as
    the class-teacher notice reads it (`timetable.class_at`).  Last in the module: it adds an
    incident to Room C."""
    from policy_server.db.models import Incident, SchoolClass
    from policy_server.timetable.models import StudentAccount
    from policy_server.timetable.service import SCHOOL_TZ

    server, _of_7a, _of_8b = world
    with server.db() as db:
        class_7a = db.scalar(select(SchoolClass.id).where(SchoolClass.name == "7-A"))
        db.add(StudentAccount(os_user="own-login-7a", class_id=class_7a))
        db.commit()
    _agent, token = server.enroll("pc-c2", seat="c-02", room="Room C")
    during_8b = (datetime.now(SCHOOL_TZ) - timedelta(days=1)).replace(hour=18, minute=5, second=0,
                                                                       microsecond=0)
    event = protocol.make_event("web.report", {"url": "http://own-login.example/page"},
                                subject=protocol.Subject(os_user="own-login-7a", seat="c-02"),
                                occurred_at=during_8b)
    with server.agent_client(token) as agent:
        answer = agent.post("/api/v1/events", json={"events": [event.model_dump(mode="json")]})
        assert answer.status_code == 200 and answer.json()["accepted"], answer.text
    with server.db() as db:
        assert db.scalar(select(SchoolClass.name).join(Incident, Incident.class_id == SchoolClass.id)
                         .where(Incident.os_user == "own-login-7a")) == "7-A"
