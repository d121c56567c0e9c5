"""People pages: add, edit (rooms, classes, class teacher), disable, reset a password, change it."""

from __future__ import annotations

import re

from sqlalchemy import select

from policy_server.db.models import AuditRecord, Person, PersonClass, SchoolClass
from tests.web.conftest import PASSWORD, csrf_of, login

TEMP = re.compile(r'id="temporary-password">([a-z0-9-]+)<')


def _admin(client, school):
    username = school.person("admin")
    assert login(client, username).status_code == 303
    return username


def test_only_the_responsible_person_sees_people(client, school):
    assert client.get("/people", follow_redirects=False).headers["location"].startswith("/login")
    teacher = school.person("teacher")
    login(client, teacher)
    page = client.get("/people?lang=en")
    assert page.status_code == 403
    assert "may not see" in page.text


def test_add_edit_reset_disable(client, school):
    admin = _admin(client, school)
    school.room("Lab 9")
    form = client.get("/people/new?lang=en")
    assert form.status_code == 200
    token = csrf_of(form.text)
    room_id = re.search(r'name="room_ids" value="(\d+)"[^>]*> Lab 9', form.text).group(1)
    # a bad user name and a bad class: the error summary names both, input kept
    bad = client.post(
        "/people/new",
        data={
            "csrf_token": token,
            "username": "Bad Name!",
            "role": "teacher",
            "classes": "7-A, <b>",
            "full_name": "Aida",
        },
    )
    assert bad.status_code == 422
    assert 'class="error-summary"' in bad.text and 'href="#f-classes"' in bad.text
    assert 'value="Aida"' in bad.text
    made = client.post(
        "/people/new",
        data={
            "csrf_token": token,
            "username": "a.asanova",
            "full_name": "Aida Asanova",
            "role": "teacher",
            "room_ids": [room_id],
            "classes": "7-A, 8-B",
            "class_teacher_of": "7-A",
            "language": "ru",
        },
    )
    assert made.status_code == 200, made.text
    temporary = TEMP.search(made.text).group(1)
    with school.session() as db:
        person = db.scalar(select(Person).where(Person.username == "a.asanova"))
        assert person.must_change_password and person.language == "ru"
        links = db.execute(
            select(SchoolClass.name, PersonClass.class_teacher)
            .join(PersonClass, PersonClass.class_id == SchoolClass.id)
            .where(PersonClass.person_id == person.id)
        ).all()
        assert sorted(links) == [("7-A", True), ("8-B", False)]
        pid = person.id
    listing = client.get("/people?role=class_teacher&lang=en")
    assert "a.asanova" in listing.text and "Lab 9" in listing.text
    # edit: no longer class teacher, now a director's name change
    edited = client.post(
        f"/people/{pid}",
        data={
            "csrf_token": token,
            "full_name": "Aida A.",
            "role": "teacher",
            "classes": "8-B",
            "class_teacher_of": "",
        },
        follow_redirects=False,
    )
    assert edited.status_code == 303 and edited.headers["location"] == f"/people/{pid}?done=saved"
    assert "a.asanova" not in client.get("/people?role=class_teacher").text
    # the teacher logs in with the temporary password: must change it first
    from fastapi.testclient import TestClient

    other = TestClient(client.app, base_url="http://127.0.0.1")  # no second lifespan
    if True:
        first = login(other, "a.asanova", temporary)
        assert first.headers["location"].startswith("/account/password")
        pw = other.get(first.headers["location"])
        assert pw.status_code == 200
        t2 = csrf_of(pw.text)
        same = other.post(
            "/account/password",
            data={"csrf_token": t2, "current": temporary, "new": "short", "repeat": "short"},
        )
        assert same.status_code == 422 and "error-summary" in same.text
        ok = other.post(
            "/account/password",
            data={"csrf_token": t2, "current": temporary, "new": "my-own-pass-9", "repeat": "my-own-pass-9"},
            follow_redirects=False,
        )
        assert ok.status_code == 303
        # reset: the old password and the open session stop working
        reset = client.post(f"/people/{pid}/reset-password", data={"csrf_token": token})
        second = TEMP.search(reset.text).group(1)
        assert second != temporary
        assert other.get("/incidents", follow_redirects=False).status_code == 303
        assert login(other, "a.asanova", "my-own-pass-9").status_code == 401
        assert login(other, "a.asanova", second).headers["location"].startswith("/account/password")
    # disable: never deleted, cannot log in
    assert (
        client.post(f"/people/{pid}/disable", data={"csrf_token": token}, follow_redirects=False).status_code
        == 303
    )
    other.cookies.clear()
    assert login(other, "a.asanova", second).status_code == 401
    with school.session() as db:
        actions = [
            a
            for (a,) in db.execute(
                select(AuditRecord.action).where(AuditRecord.target == "a.asanova").order_by(AuditRecord.id)
            )
        ]
        assert actions[:2] == ["person.create", "person.links"]
        assert {
            "person.update",
            "person.reset_password",
            "person.disable",
            "person.change_own_password",
        } <= set(actions)
        assert db.scalar(select(Person).where(Person.username == "a.asanova")).disabled
    # one cannot disable oneself
    with school.session() as db:
        me = db.scalar(select(Person).where(Person.username == admin)).id
    refused = client.post(f"/people/{me}/disable?lang=en", data={"csrf_token": token})
    assert refused.status_code == 422 and "own account" in refused.text
    assert PASSWORD


def test_an_edit_returns_to_the_list_with_its_filters(client, school):
    _admin(client, school)
    teacher = school.person("teacher")
    listing = client.get("/people?role=teacher&q=teacher-&lang=en")
    assert "?back=q%3Dteacher-%26role%3Dteacher" in listing.text
    form = client.get(f"/people?q={teacher}")
    token = csrf_of(form.text)
    from sqlalchemy import select as _select

    with school.session() as db:
        pid = db.scalar(_select(Person.id).where(Person.username == teacher))
    saved = client.post(
        f"/people/{pid}",
        data={
            "csrf_token": token,
            "role": "teacher",
            "full_name": "T",
            "back": "q=teacher-&role=teacher&evil=1",
        },
        follow_redirects=False,
    )
    assert saved.headers["location"] == "/people?q=teacher-&role=teacher&done=saved"
