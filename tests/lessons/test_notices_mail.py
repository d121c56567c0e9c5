"""Repeated attempts in a lesson become a notice to the class teacher and the responsible
person: a badge and a list in the console, and an e-mail through the school's SMTP server
(a real local SMTP server, aiosmtpd, started by the fixture)."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.header import decode_header, make_header

import pytest
from aiosmtpd.controller import Controller

from policy_server.db.models import utcnow
from tests.lessons.test_pages import web_login


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    from tests.support.server import free_port

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def blocked(seat: str, host: str) -> dict:
    return {"id": str(uuid.uuid4()), "type": "web.blocked", "occurred_at": utcnow().isoformat(),
            "subject": {"os_user": "shared", "seat": seat}, "data": {"url": f"http://{host}/", "host": host}}


def test_repeated_attempts_notify_the_class_teacher_by_console_and_mail(school, now_periods, smtp):
    inbox, port = smtp
    from policy_server.db.models import Person, PersonClass, SchoolClass
    from policy_server.notices.service import deliver_pending, set_address, set_smtp
    from policy_server.scope import viewer_for
    from policy_server.timetable.service import set_seating

    school.user("teacher", "ct7b", language="ru")  # the class teacher of 7-Б
    with school.db() as db:
        cls = db.query(SchoolClass).filter_by(name="7-Б").one()
        ct = db.query(Person).filter_by(username="ct7b").one()
        db.add(PersonClass(person_id=ct.id, class_id=cls.id, class_teacher=True))
        boss = viewer_for(db, db.query(Person).filter_by(username="boss").one())
        set_smtp(db, boss, host="127.0.0.1", port=port, sender="kalkan@school.kg")
        set_address(db, viewer_for(db, ct), email="ct7b@school.kg")
        from policy_server.db.models import Room

        lab1 = db.query(Room).filter_by(name="lab-1").one().id
        set_seating(db, boss, class_id=cls.id, room_id=lab1, seat="s2", student="Асан Үсөнов")
        db.commit()
    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    _id, auth = school.agents[("lab-1", "s2")]
    events = [blocked("s2", "games.example") for _ in range(6)]
    assert school.client.post("/api/v1/events", json={"events": events}, headers=auth).status_code == 200
    summary = school.client.post(f"/api/v1/lessons/{lesson_id}/end", headers=csrf).json()["summary"]
    assert summary["repeated"] == [{"who": "Асан Үсөнов", "attempts": 6}]  # named by the seating plan
    # the console: a badge and the list
    school.login("ct7b")
    notices = school.client.get("/api/v1/notices").json()
    # two notices: the incident's as it opened (the 5th attempt, 001 §2.7), and the lesson's summary
    assert notices["unread"] == 2
    [summary_notice] = [n for n in notices["notices"] if n["subject"].startswith("Повторные попытки")]
    assert "Асан Үсөнов" in summary_notice["body"]  # in the person's language
    assert any(n["subject"].startswith("Класс 7-Б:") for n in notices["notices"])
    web_login(school, "ct7b")
    page = school.client.get("/notices")
    assert 'class="badge"' in page.text and "Асан Үсөнов" in page.text
    # the e-mail: only to people with an address, once (the server's lessons ticker sends it every
    # 10 s; sending now as well must not send it twice)
    import time

    with school.db() as db:
        deliver_pending(db)
        db.commit()
    deadline = time.monotonic() + 12
    while len(inbox.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    with school.db() as db:
        assert deliver_pending(db) == 0
    assert [to for to, _raw in inbox.messages] == [["ct7b@school.kg"], ["ct7b@school.kg"]]
    [raw] = [raw for _to, raw in inbox.messages
             if str(make_header(decode_header(message_from_bytes(raw)["Subject"]))).startswith(
                 "Kalkan: Повторные попытки")]
    mail = message_from_bytes(raw)
    assert str(make_header(decode_header(mail["Subject"]))).startswith("Kalkan: Повторные попытки")
    assert "Асан Үсөнов" in mail.get_payload(decode=True).decode("utf-8")


def test_mail_failure_is_recorded_not_raised(school, now_periods):
    from policy_server.db.models import Person
    from policy_server.notices.models import Notice
    from policy_server.notices.service import deliver_pending, notify, set_address, set_smtp
    from policy_server.scope import viewer_for

    with school.db() as db:
        boss = viewer_for(db, db.query(Person).filter_by(username="boss").one())
        set_smtp(db, boss, host="127.0.0.1", port=1, sender="kalkan@school.kg")  # nothing listens
        set_address(db, boss, email="boss@school.kg")
        notify(db, person_id=boss.person.id, kind="test", subject_id="Notices", body_id="Saved.", params={})
        db.commit()
        assert deliver_pending(db) == 0
        db.commit()
        notice = db.query(Notice).one()
        assert notice.emailed_at is None and "127.0.0.1:1" in notice.email_error


def test_badge_on_every_page(school, now_periods):
    from policy_server.db.models import Person
    from policy_server.notices.service import notify

    with school.db() as db:
        aigul = db.query(Person).filter_by(username="aigul").one()
        notify(db, person_id=aigul.id, kind="test", subject_id="Notices", body_id="Saved.", params={})
        db.commit()
    web_login(school, "aigul")
    for path in ("/incidents", "/workstations", "/teach", "/timetable"):
        page = school.client.get(path)
        assert page.status_code == 200 and '<span class="badge"' in page.text, path
    school.client.post("/notices/read", data={"csrf_token": __import__("re").search(
        r'name="csrf_token" value="([^"]+)"', school.client.get("/notices").text).group(1)})
    assert '<span class="badge"' not in school.client.get("/incidents").text


def test_the_badge_counts_this_schools_notices_only(school, tmp_path):
    """Two schools' apps in one process (a service of many schools): the badge of school A's
    page counts A's notices, never those of the person with the same number in school B (the
    badge's database was once the last app's made)."""
    from policy_server.app import create_app
    from policy_server.db.models import Person
    from policy_server.notices.service import notify
    from policy_server.people.service import create_person
    from policy_server.settings import Settings

    with school.db() as db:
        aigul_id = db.query(Person).filter_by(username="aigul").one().id
    other = create_app(Settings(state_dir=tmp_path / "school-b", tls=False))  # made after A's
    with other.state.sessionmaker() as db:
        while (db.query(Person).count() or 0) < aigul_id:
            create_person(db, username=f"b{uuid.uuid4().hex[:8]}", role="teacher", password="x" * 12,
                          actor="test")
            db.flush()
        notify(db, person_id=aigul_id, kind="test", subject_id="Notices", body_id="Saved.", params={})
        db.commit()
    from policy_server.notices.models import Notice

    with other.state.sessionmaker() as db:  # B's person of that number has one unread
        assert db.query(Notice).filter_by(person_id=aigul_id, read_at=None).count() == 1
    web_login(school, "aigul")
    page = school.client.get("/incidents")
    assert page.status_code == 200 and '<span class="badge"' not in page.text  # A's aigul has none
    other.state.sessionmaker.kw["bind"].dispose()
