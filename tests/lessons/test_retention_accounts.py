"""Retention (001 §2.15) of the student's OS account in two records that kept it for ever:
resolved incidents (`Incident.os_user` and wherever the account is written into the
incident) and the audit of linking an account to a class (`timetable.student_account`).
Made through the real routes, aged, then `apply_retention` with the days the server uses:
an old resolved incident loses the account everywhere and still renders (page in ky/ru/en,
the JSON API, the director's page); an old OPEN incident, a recent resolved one and an old
one resolved recently stay whole; the dry run counts what is applied; a second run changes
nothing; a new event of the same student opens a new incident.  SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from policy_server.db.models import AuditRecord, Event, Incident, TimelineEntry
from policy_server.db.retention import apply_retention, plan_retention
from policy_server.rules import pseudonym
from tests.lessons.test_class_teacher_notice import bypass
from tests.lessons.test_retention_personal import blocked

AGED = timedelta(days=120)
USER_REMOVED = {"ky": "эсеп 90 күн сакталгандан кийин алынып салынды (001 §2.15)",
                "ru": "учётная запись удалена после 90 дн. хранения (001 §2.15)",
                "en": "account removed after 90 days (001 §2.15)"}
TIMELINE_NOTE = {"ky": "окуучунун компьютердеги эсеби 90 күндөн кийин бул инциденттен алынып салынды",
                 "ru": "учётная запись ученика на компьютере убрана из этого инцидента через 90 дн.",
                 "en": "computer account was taken out of this incident after 90 days (001 §2.15)"}
EVENTS_REMOVED = {"ky": "90 күндөн кийин алынып салынган окуялар: 3 (001 §2.15)",
                  "ru": "событий удалено по истечении 90 дн.: 3 (001 §2.15)",
                  "en": "events removed after 90 days: 3 (001 §2.15)"}
ACCOUNT_REMOVED = {"ky": "окуучунун компьютердеги эсеби алынып салынды (001 §2.15)",
                   "ru": "учётная запись ученика на компьютере убрана (001 §2.15)",
                   "en": "student's computer account removed (001 §2.15)"}
ACCOUNT_ACTION = "timetable.student_account"
YES = {"ky": "ооба", "ru": "да", "en": "yes"}


def _apply(school):
    with school.db() as db:
        plan = apply_retention(db, actor="test", days=90)
        db.commit()
        return plan


def _incident_of(school, os_user: str) -> int:
    with school.db() as db:
        (incident_id,) = db.scalars(select(Incident.id).where(Incident.os_user == os_user))
        return incident_id


def _snapshot(school) -> dict[int, tuple]:
    """Every incident as stored, with its timeline and the audit records of it."""
    with school.db() as db:
        timeline = {}
        for t in db.scalars(select(TimelineEntry).order_by(TimelineEntry.id)):
            timeline.setdefault(t.incident_id, []).append((t.actor, t.action, t.detail))
        audits = {}
        for r in db.scalars(select(AuditRecord).where(AuditRecord.action.like("incident.%"))):
            audits.setdefault(r.target, []).append(r.detail)
        return {i.id: (i.rule, i.title, i.params, i.severity, i.clauses, i.dedup_key, i.status, i.agent_id,
                       i.seat, i.os_user, i.first_seen_at, i.last_seen_at, i.event_count, i.class_id,
                       i.resolution, i.resolution_code, tuple(timeline.get(i.id, ())),
                       tuple(map(str, audits.get(f"incident:{i.id}", ()))))
                for i in db.scalars(select(Incident))}


def _age(school, incident_id: int, *, keep_timeline_recent: bool = False) -> None:
    """The incident, its events, timeline and audit records: four months old."""
    with school.db() as db:
        incident = db.get(Incident, incident_id)
        for column in ("first_seen_at", "last_seen_at", "window_ends_at", "created_at"):
            setattr(incident, column, getattr(incident, column) - AGED)
        rows = list(db.scalars(select(Event).where(Event.os_user == incident.os_user)))
        if not keep_timeline_recent:
            rows += db.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id))
            rows += db.scalars(select(AuditRecord).where(AuditRecord.target == f"incident:{incident_id}"))
        for row in rows:
            column = "occurred_at" if isinstance(row, Event) else "at"
            setattr(row, column, getattr(row, column) - AGED)
        db.commit()


def _resolve(school, csrf: dict, incident_id: int, reason: str) -> None:
    r = school.client.post(f"/api/v1/incidents/{incident_id}/resolve", json={"reason": reason}, headers=csrf)
    assert r.status_code == 200, r.text


def _incidents(school) -> dict[str, int]:
    """old: st7b's bypass, resolved, all four months old (its stored title the pre-0105 way,
    naming the account); open: pupil1's blocked pages, four months old, not resolved; recent:
    pupil2's bypass resolved now; late: loner's old bypass resolved only now."""
    school.post(school.agents[("lab-2", "s1")][1], *[bypass("st7b", "s1", m) for m in (3, 2, 1)])
    school.post(school.agents[("lab-1", "s1")][1], *[blocked("pupil1", "s1") for _ in range(6)])
    school.post(school.agents[("lab-2", "s2")][1], *[bypass("pupil2", "s2", m) for m in (3, 2, 1)])
    school.post(school.agents[("lab-1", "s3")][1], *[bypass("loner", "s3", m) for m in (3, 2, 1)])
    ids = {name: _incident_of(school, user) for name, user in
           (("old", "st7b"), ("open", "pupil1"), ("recent", "pupil2"), ("late", "loner"))}
    with school.db() as db:  # stored before 0105 scrubbed titles: the account in the title too
        old = db.get(Incident, ids["old"])
        old.title = "Filter bypass attempt (tunnel) by st7b"
        old.params = {**old.params, "path": "/home/st7b/vpn.sh"}
        db.commit()
    csrf = school.login("boss")
    _resolve(school, csrf, ids["old"], "Talked to st7b: the VPN is gone from /home/st7b.")
    _resolve(school, csrf, ids["recent"], "Talked to pupil2.")
    _age(school, ids["old"])
    _age(school, ids["open"])
    _age(school, ids["late"])
    _resolve(school, csrf, ids["late"], "Talked to loner.")  # resolved now: activity after the cut-off
    return ids


def test_old_resolved_incident_loses_the_account_everywhere_others_stay(school, now_periods):
    ids = _incidents(school)
    before = _snapshot(school)
    assert "st7b" in str(before[ids["old"]]) and pseudonym("st7b") in before[ids["old"]][5]
    with school.db() as db:
        plan = plan_retention(db, days=90)
        assert plan.incidents_depersonalised == 1 and plan.anything
        assert any(line.startswith("  resolved incidents losing the student's computer account")
                   and line.endswith(": 1") for line in plan.lines())
    applied = _apply(school)
    assert applied.incidents_depersonalised == 1
    after = _snapshot(school)

    for name in ("open", "recent", "late"):  # (the code before this change left every one so)
        assert after[ids[name]][:16] == before[ids[name]][:16], name
        assert after[ids[name]][17] == before[ids[name]][17], name
    assert after[ids["open"]][16] == before[ids["open"]][16]  # an open one's events are kept too
    old, was = after[ids["old"]], before[ids["old"]]
    (rule, title, params, severity, clauses, key, status, agent_id, seat, os_user, first, last, count,
     class_id, resolution, _code, timeline, audits) = old
    assert os_user is None
    assert "st7b" not in str(old), old  # params, title, key, timeline, resolution, audit records
    assert pseudonym("st7b") not in key and key == was[5].replace(pseudonym("st7b"), "removed")
    assert (rule, severity, clauses, status, agent_id, seat, first, last, count, class_id) == (
        was[0], was[3], was[4], was[6], was[7], was[8], was[10], was[11], was[12], was[13])
    assert seat == "s1" and status == "resolved" and count == 3
    assert title == "Filter bypass attempt (tunnel) by …"
    assert params == {**was[2], "path": "/home/…/vpn.sh",
                      "personal_removed": {"days": 90}}
    assert resolution == "Talked to …: the VPN is gone from /home/…."
    assert ("test", "personal_removed", {"days": 90, "clauses": ["001 §2.15"]}) in timeline
    assert any(action == "events_removed" for _a, action, _d in timeline)  # its old events went too
    with school.db() as db:
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["incidents_depersonalised"] == 1

    with school.db() as db:  # done once: a second run changes nothing
        assert plan_retention(db, days=90).incidents_depersonalised == 0
    assert _apply(school).incidents_depersonalised == 0
    assert _snapshot(school) == after

    # the page, in each language: the account is gone and the page says why; no 5xx
    school.login("boss")
    for lang in ("ky", "ru", "en"):
        page = school.client.get(f"/incidents/{ids['old']}?lang={lang}")
        assert page.status_code == 200, page.text
        assert USER_REMOVED[lang] in page.text and TIMELINE_NOTE[lang] in page.text, lang
        assert "st7b" not in page.text
        # the old events' removal too, in words (it showed as the raw code "events_removed")
        assert EVENTS_REMOVED[lang] in page.text and "events_removed" not in page.text
        listing = school.client.get(f"/incidents?status=resolved&lang={lang}")
        assert listing.status_code == 200 and "st7b" not in listing.text
        assert USER_REMOVED[lang] in listing.text  # the list says why the account is empty too
        recent = school.client.get(f"/incidents/{ids['recent']}?lang={lang}").text
        assert "pupil2" in recent and USER_REMOVED[lang] not in recent
    body = school.client.get(f"/api/v1/incidents/{ids['old']}").json()
    assert body["os_user"] is None and body["params"]["personal_removed"] == {"days": 90}
    assert "st7b" not in str(body) and body["title"] == "Filter bypass attempt (tunnel) by …"
    school.user("director", "dir")
    school.login("dir")
    page = school.client.get(f"/incidents/{ids['old']}?lang=ru")
    assert page.status_code == 200 and TIMELINE_NOTE["ru"] in page.text

    # the same student again at the same seat: a new incident, the old one is not joined
    school.post(school.agents[("lab-2", "s1")][1], *[bypass("st7b", "s1", m) for m in (3, 2, 1)])
    assert _incident_of(school, "st7b") != ids["old"]
    assert _snapshot(school)[ids["old"]] == after[ids["old"]]


def _account_records(school) -> dict[int, tuple]:
    with school.db() as db:
        return {r.id: (r.actor, r.target, r.at, r.detail) for r in db.scalars(
            select(AuditRecord).where(AuditRecord.action == "timetable.student_account"))}


def test_old_student_account_audit_records_lose_the_account(school):
    from policy_server.db.models import Person
    from policy_server.scope import viewer_for
    from policy_server.timetable.models import StudentAccount
    from policy_server.timetable.service import set_student_account

    with school.db() as db:
        boss = viewer_for(db, db.scalar(select(Person).where(Person.username == "boss")))
        set_student_account(db, boss, os_user="st7b", school_class="7-Б")
        set_student_account(db, boss, os_user="st8a", school_class="8-А")
        for record in db.scalars(select(AuditRecord).where(AuditRecord.action == ACCOUNT_ACTION)):
            record.at -= AGED
        set_student_account(db, boss, os_user="st9v", school_class="9-В")  # a recent one
        db.commit()
    before = _account_records(school)
    assert len(before) == 3
    with school.db() as db:
        plan = plan_retention(db, days=90)
        assert plan.account_records_scrubbed == 2 and plan.anything
        assert any(line.startswith("  audit records of students' computer accounts") and line.endswith(": 2")
                   for line in plan.lines())
    assert _apply(school).account_records_scrubbed == 2
    after = _account_records(school)
    for record_id, (actor, target, at, detail) in after.items():
        old = before[record_id]
        assert (actor, target, at) == old[:3]  # who, which class, when: kept
        if old[3]["os_user"] == "st9v":
            assert detail == old[3]
        else:
            assert detail == {"os_user": None, "account_removed": True}, detail
    with school.db() as db:
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["account_records_scrubbed"] == 2
        assert plan_retention(db, days=90).account_records_scrubbed == 0
        # the class list itself is the school's working list: it stays
        assert set(db.scalars(select(StudentAccount.os_user))) == {"st7b", "st8a", "st9v"}
    assert _apply(school).account_records_scrubbed == 0  # a second run changes nothing
    assert _account_records(school) == after

    school.login("boss")
    for lang in ("ky", "ru", "en"):
        page = school.client.get(f"/audit?what=timetable.student_account&lang={lang}")
        assert page.status_code == 200, page.text
        shown = f"<dt>{ACCOUNT_REMOVED[lang]}</dt><dd>{YES[lang]}</dd>"
        assert shown in page.text.replace("&#39;", "'"), lang
        assert "st7b" not in page.text and "st8a" not in page.text and "st9v" in page.text
        csv = school.client.get(f"/audit.csv?what=timetable.student_account&lang={lang}")
        assert csv.status_code == 200 and "st7b" not in csv.text
        assert f"{ACCOUNT_REMOVED[lang]}: {YES[lang]}" in csv.text


def test_many_old_incidents_are_done_in_batches(school, now_periods, monkeypatch):
    """The first run on a school's years of incidents goes in batches: each incident loses its
    own account, the counts add up (batches of one here)."""
    from policy_server.incidents import retention as incident_accounts

    ids = _incidents(school)
    _age(school, ids["recent"])
    monkeypatch.setattr(incident_accounts, "BATCH", 1)
    with school.db() as db:
        assert plan_retention(db, days=90).incidents_depersonalised == 2
    assert _apply(school).incidents_depersonalised == 2
    after = _snapshot(school)
    for name, account in (("old", "st7b"), ("recent", "pupil2")):
        assert after[ids[name]][9] is None and account not in str(after[ids[name]]), name
        assert after[ids[name]][2]["personal_removed"] == {"days": 90}
    assert after[ids["open"]][9] == "pupil1" and after[ids["late"]][9] == "loner"
