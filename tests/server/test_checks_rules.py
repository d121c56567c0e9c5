"""The pure ISUO cross-check functions (policy_server.rules.isuo): no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from policy_server import protocol
from policy_server.rules import RuleInput
from policy_server.rules.isuo import (
    IsuoVisit,
    is_storage,
    isuo_from_student_lab,
    left_unlocked,
    lesson_running,
    listed_group_kind,
    storage_during_isuo,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
STICK = {"device": {"vendor_id": "0781", "product_id": "5567", "kinds": ["storage"]}}
KEYBOARD = {"device": {"vendor_id": "046d", "product_id": "c31c", "kinds": ["hid"],
                       "interfaces": [{"cls": 3}]}}
UNCLASSIFIED_STICK = {"device": {"vendor_id": "abcd", "product_id": "0001", "interfaces": [{"cls": 8}]}}


def lesson(room: str, start: datetime, minutes: int = 45) -> protocol.Lesson:
    return protocol.Lesson(id="l1", room=room, teacher="aigul", starts_at=start,
                           ends_at=start + timedelta(minutes=minutes))


def isuo_start(room: str | None, os_user: str | None = "teacher1", at: datetime = T0) -> RuleInput:
    return RuleInput(event_id="e1", type="isuo.session", agent_id="a1", occurred_at=at,
                     data={"host": "emis.edu.gov.kg", "state": "start", "started_at": at.isoformat()},
                     os_user=os_user, seat="seat-1", room=room)


def bundle(labs=(), lessons=(), groups=None) -> protocol.PolicyBundle:
    b = protocol.PolicyBundle(lessons=list(lessons))
    b.isuo.student_lab_rooms = list(labs)
    if groups is not None:
        b.groups = groups
    return b


def test_lesson_running_only_in_its_room_and_time():
    lessons = [lesson("lab-1", T0)]
    assert lesson_running(lessons, "lab-1", T0 + timedelta(minutes=10))
    assert not lesson_running(lessons, "lab-2", T0 + timedelta(minutes=10))
    assert not lesson_running(lessons, "lab-1", T0 + timedelta(minutes=45))  # ended
    assert not lesson_running(lessons, None, T0)


def test_isuo_in_a_student_lab_outside_a_lesson_is_an_incident():
    draft = isuo_from_student_lab(isuo_start("lab-1"), bundle(labs=["lab-1"]))
    assert draft is not None and draft.rule == "isuo.student_lab"
    assert draft.params["why"] == "student_lab_no_lesson"
    assert "002 §4.4" in draft.clauses and draft.severity == "high"
    # during a lesson there, or in a room that is not a student lab: fine
    during_lesson = bundle(labs=["lab-1"], lessons=[lesson("lab-1", T0)])
    assert isuo_from_student_lab(isuo_start("lab-1"), during_lesson) is None
    assert isuo_from_student_lab(isuo_start("office"), bundle(labs=["lab-1"])) is None
    # an end is not judged again
    end = isuo_start("lab-1")
    end = RuleInput(**{**end.__dict__, "data": {**end.data, "state": "end"}})
    assert isuo_from_student_lab(end, bundle(labs=["lab-1"])) is None


def test_isuo_by_a_listed_student_account_anywhere_is_an_incident():
    groups = [protocol.Group(name="class-7a", kind="student", os_users=["st1"]),
              protocol.Group(name="teacher", kind="teacher", os_users=["teacher1"])]
    b = bundle(groups=groups)
    draft = isuo_from_student_lab(isuo_start("office", os_user="st1"), b)
    assert draft is not None and draft.params["why"] == "student_account"
    assert isuo_from_student_lab(isuo_start("office", os_user="teacher1"), b) is None
    # an unlisted user falls into the default "student" group, but that alone proves nothing
    assert listed_group_kind(b, "someone") is None
    assert isuo_from_student_lab(isuo_start("office", os_user="someone"), b) is None


def _usb(data: dict, at: datetime, type_: str = "usb.connected", agent: str = "a1") -> RuleInput:
    return RuleInput(event_id="u1", type=type_, agent_id=agent, occurred_at=at, data=data, seat="seat-1")


def test_storage_during_or_right_after_an_isuo_session():
    visit = IsuoVisit(access_id=7, agent_id="a1", host="emis.edu.gov.kg", started_at=T0,
                      ended_at=T0 + timedelta(minutes=30))
    during = storage_during_isuo(visit, _usb(STICK, T0 + timedelta(minutes=5)))
    assert during is not None and during.params["during"] is True and during.dedup_key == "isuo.storage:a1:7"
    after = storage_during_isuo(visit, _usb(STICK, T0 + timedelta(minutes=39)))
    assert after is not None and after.params["during"] is False and "000 §6.5" in after.clauses
    assert storage_during_isuo(visit, _usb(STICK, T0 + timedelta(minutes=41))) is None  # 11 min after
    assert storage_during_isuo(visit, _usb(STICK, T0 - timedelta(minutes=1))) is None  # before
    assert storage_during_isuo(visit, _usb(KEYBOARD, T0 + timedelta(minutes=5))) is None  # not storage
    assert storage_during_isuo(visit, _usb(STICK, T0 + timedelta(minutes=5), "usb.blocked")) is None
    assert storage_during_isuo(visit, _usb(STICK, T0 + timedelta(minutes=5), "usb.allowed")) is not None
    assert storage_during_isuo(visit, _usb(STICK, T0 + timedelta(minutes=5), agent="a2")) is None
    assert is_storage(UNCLASSIFIED_STICK) and not is_storage(KEYBOARD)
    still_open = IsuoVisit(access_id=8, agent_id="a1", host="h", started_at=T0)
    assert storage_during_isuo(still_open, _usb(STICK, T0 + timedelta(hours=3))) is not None


def test_left_unlocked_needs_an_ended_session_no_lock_and_a_reporting_agent():
    end = T0 + timedelta(minutes=20)
    visit = IsuoVisit(access_id=3, agent_id="a1", host="h", started_at=T0, ended_at=end, seat="seat-1")
    later = end + timedelta(minutes=5)
    draft = left_unlocked(visit, [], now=later, reported_until=later)
    assert draft is not None and draft.rule == "isuo.unlocked" and "000 §6.8" in draft.clauses
    assert left_unlocked(visit, [end + timedelta(seconds=20)], now=later, reported_until=later) is None
    assert left_unlocked(visit, [end - timedelta(seconds=10)], now=later, reported_until=later) is None
    # a lock 3 minutes later is too late
    assert left_unlocked(visit, [end + timedelta(minutes=3)], now=later, reported_until=later) is not None
    # not yet judged: the deadline has not passed, or the agent has not reported past it
    assert left_unlocked(visit, [], now=end + timedelta(minutes=1), reported_until=later) is None
    assert left_unlocked(visit, [], now=later, reported_until=end + timedelta(minutes=1)) is None
    assert left_unlocked(visit, [], now=later, reported_until=None) is None
    open_visit = IsuoVisit(access_id=4, agent_id="a1", host="h", started_at=T0)
    assert left_unlocked(open_visit, [], now=later, reported_until=later) is None


def test_new_incidents_have_titles_in_three_languages():
    """The web console translates by rule + params: the checks' params must fill the titles."""
    from policy_server.web.presenters import incident_title

    visit = IsuoVisit(access_id=3, agent_id="a1", host="h", started_at=T0, ended_at=T0, seat="seat-1")
    drafts = [
        isuo_from_student_lab(isuo_start("lab-1"), bundle(labs=["lab-1"])),
        storage_during_isuo(visit, _usb(STICK, T0)),
        left_unlocked(visit, [], now=T0 + timedelta(hours=1), reported_until=T0 + timedelta(hours=1)),
    ]
    for draft in drafts:
        titles = {lang: incident_title(lang, draft.rule, draft.params, "FALLBACK")
                  for lang in ("ky", "ru", "en")}
        assert "FALLBACK" not in titles.values() and len(set(titles.values())) == 3, titles
        assert all("seat-1" in t for t in titles.values())
    assert "ИСУО" in incident_title("ru", "isuo.unlocked", {"where": "seat-1"}, "")
    assert incident_title("ky", "av.full_scan_overdue", {}, "x") != "x"
    assert "seat-9" in incident_title("ru", "integrity.chain_broken", {"where": "seat-9"}, "")
