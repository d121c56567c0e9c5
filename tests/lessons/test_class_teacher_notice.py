"""The class-teacher notice (001 §2.7) goes to the class teacher(s) of the student's class as
`person_classes` marks them — the class from the student's own OS account, else the class of
the period running at the seat's room — not to the policy group's `class_teacher` name; each
gets the notice in the console and by e-mail (a real local SMTP server, aiosmtpd)."""

from __future__ import annotations

import time
from datetime import timedelta
from email import message_from_bytes
from email.header import decode_header, make_header

from sqlalchemy import select

from policy_server import protocol
from policy_server.db.models import utcnow
from tests.lessons.test_notices_mail import smtp  # noqa: F401  (the SMTP server fixture)


def bypass(os_user: str, seat: str, minutes_ago: float) -> protocol.EventEnvelope:
    return protocol.make_event(
        "net.bypass", {"kind": "tunnel", "dst_ip": "203.0.113.9", "dst_port": 22, "occurrences": 1},
        subject=protocol.Subject(os_user=os_user, seat=seat),
        occurred_at=utcnow() - timedelta(minutes=minutes_ago))


def told(school, os_user: str) -> set[str]:
    from policy_server.db.models import Incident, Notification, Person

    with school.db() as db:
        rows = db.execute(select(Person.username).join(Notification, Notification.person_id == Person.id)
                          .join(Incident, Incident.id == Notification.incident_id)
                          .where(Incident.os_user == os_user, Notification.role == "class_teacher"))
        return set(rows.scalars())


def test_class_teachers_of_the_students_class_are_told_by_console_and_mail(school, now_periods, smtp):  # noqa: F811
    inbox, port = smtp
    from policy_server.db.models import Person, PersonClass
    from policy_server.notices.service import deliver_pending, set_address, set_smtp
    from policy_server.policies.service import amend_policy
    from policy_server.scope import viewer_for
    from policy_server.timetable.service import ensure_class, set_student_account

    school.user("teacher", "ct7b", language="ru")
    school.user("teacher", "ct7b2", language="ky")
    school.user("teacher", "ct8a", language="en")
    with school.db() as db:
        people = {p.username: p for p in db.scalars(select(Person))}
        boss = viewer_for(db, people["boss"])
        c7b, c8a = ensure_class(db, "7-Б"), ensure_class(db, "8-А")
        db.add_all([PersonClass(person_id=people["ct7b"].id, class_id=c7b.id, class_teacher=True),
                    PersonClass(person_id=people["ct7b2"].id, class_id=c7b.id, class_teacher=True),
                    PersonClass(person_id=people["ct8a"].id, class_id=c8a.id, class_teacher=True)])
        set_smtp(db, boss, host="127.0.0.1", port=port, sender="kalkan@school.kg")
        for name in ("ct7b", "ct7b2", "ct8a", "aigul", "bakyt"):
            set_address(db, viewer_for(db, people[name]), email=f"{name}@school.kg")
        set_student_account(db, boss, os_user="st7b", school_class="7-Б")
        # the old source: a policy group naming bakyt as class teacher — must no longer count
        amend_policy(db, actor="test", comment="group", change=lambda b: b.model_copy(update={"groups": [
            protocol.Group(name="class-x", os_users=["st7b", "shared"], class_teacher="bakyt")]}))
        db.commit()

    # a 7-Б student on their own account, at a lab-2 seat during 8-А's period: the account wins
    _id, lab2_s1 = school.agents[("lab-2", "s1")]
    school.post(lab2_s1, *[bypass("st7b", "s1", m) for m in (3, 2, 1)])
    # both class teachers; not aigul (teaches 7-Б), not bakyt (the group's old name)
    assert told(school, "st7b") == {"ct7b", "ct7b2"}

    # a shared account at a lab-2 seat: the class of the period running there (8-А, bakyt's period)
    _id, lab2_s2 = school.agents[("lab-2", "s2")]
    school.post(lab2_s2, *[bypass("shared", "s2", m) for m in (3, 2, 1)])
    assert told(school, "shared") == {"ct8a"}

    # the console: each class teacher has the notice, in their language
    school.login("ct7b")
    notices = school.client.get("/api/v1/notices").json()
    assert notices["unread"] == 1
    subject = notices["notices"][0]["subject"]
    assert subject.startswith("Класс 7-Б:") and "(001 §2.7)" in subject
    assert "st7b" in notices["notices"][0]["body"] and "s1" in notices["notices"][0]["body"]
    school.login("ct7b2")
    assert school.client.get("/api/v1/notices").json()["notices"][0]["subject"].startswith("7-Б классы:")
    school.login("bakyt")
    assert school.client.get("/api/v1/notices").json()["unread"] == 0

    # the e-mails: one to each class teacher told, none to anyone else
    with school.db() as db:
        deliver_pending(db)
        db.commit()
    deadline = time.monotonic() + 10
    while len(inbox.messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    assert sorted(to for tos, _raw in inbox.messages for to in tos) == [
        "ct7b2@school.kg", "ct7b@school.kg", "ct8a@school.kg"]
    by_to = {tos[0]: message_from_bytes(raw) for tos, raw in inbox.messages}
    subject = str(make_header(decode_header(by_to["ct8a@school.kg"]["Subject"])))
    assert subject.startswith("Kalkan: Class 8-А:") and "001 §2.7" in subject
    assert "shared" in by_to["ct8a@school.kg"].get_payload(decode=True).decode("utf-8")


def test_no_class_known_falls_back_to_the_policy_group_only_then(school):
    """Outside any period, an account without a class: the policy group's class teacher (a
    school that has not entered its classes yet) is still told."""
    from policy_server.policies.service import amend_policy

    with school.db() as db:
        amend_policy(db, actor="test", comment="group", change=lambda b: b.model_copy(update={"groups": [
            protocol.Group(name="class-x", os_users=["loner"], class_teacher="bakyt")]}))
        db.commit()
    _id, auth = school.agents[("lab-1", "s3")]
    school.post(auth, *[bypass("loner", "s3", m) for m in (3, 2, 1)])
    assert told(school, "loner") == {"bakyt"}
