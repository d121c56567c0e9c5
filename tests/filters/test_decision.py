"""The decision: precedence, lessons, schedules, holidays, bans, the ClientHello
decision, and a property test that every verdict names its rule."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.decision import RULES, decide, decide_host
from filters.index import CategoryIndex, Overlay
from filters.policy import FilterPolicy, PolicyError
from policy_server.protocol import PolicyBundle

from .helpers import MONDAY_MORNING, lesson, make_policy

INDEX = CategoryIndex.empty(Overlay({
    "casino.example": ["gambling"], "cards.example": ["games"], "bank.example": ["transactions"],
    "mixed.example/bad": ["porn"], "wiki.example": ["education"],
}))
OPEN_FOR_STUDENTS = {"unsupervised": {"student": "open"}}


def d(policy, url, group="student", at=MONDAY_MORNING, **kw):
    return decide(policy, INDEX, url=url, group=group, at=at, **kw)


def test_defaults_mirror_the_protocol():
    policy = FilterPolicy.from_bundle(PolicyBundle().model_dump(mode="json"))
    empty = FilterPolicy.from_bundle({})
    for p in (policy, empty):
        assert set(p.groups) == {"student", "teacher"}
        assert p.isuo_hosts.host_listed("emis.edu.gov.kg")
        assert p.timezone == "Asia/Bishkek" and p.alert_threshold == 50 and p.safe_search


def test_students_outside_a_lesson_get_only_the_school_allow_list():  # 001 §2.9
    policy = make_policy(filtering={"allow_list": ["wiki.example", "school.kg/lessons"]})
    assert d(policy, "http://wiki.example/page").rule == "school.allow_list"
    assert d(policy, "http://school.kg/lessons/7").action == "allow"
    v = d(policy, "http://news.example/")
    assert (v.action, v.rule, v.clauses) == ("block", "unsupervised.not_on_allow_list", ("001 §2.9",))
    assert d(policy, "http://news.example/", group="teacher").rule == "default.allow"


def test_category_rules_and_explicit_actions():
    policy = make_policy(filtering={**OPEN_FOR_STUDENTS, "category_actions": {"teacher": {"games": "block"},
                                                                              "student": {"games": "allow"}}})
    v = d(policy, "https://www.casino.example/x")
    assert (v.action, v.rule, v.categories) == ("block", "category", ("gambling",))
    assert "000 §8.1" in v.clauses and "001 §3.1" in v.clauses and v.intercept_tls
    assert d(policy, "http://cards.example/").action == "allow"  # explicitly allowed for students
    assert d(policy, "http://cards.example/", group="teacher").rule == "category"  # explicitly blocked
    assert d(policy, "http://casino.example/", group="teacher").action == "block"  # default: block for all
    assert d(policy, "http://mixed.example/bad/x").categories == ("porn",)
    assert d(policy, "http://mixed.example/good").action == "allow"


def test_precedence_allow_list_beats_block_list_beats_category():
    policy = make_policy(filtering={**OPEN_FOR_STUDENTS, "allow_list": ["casino.example/rules"],
                                    "block_list": ["wiki.example"],
                                    "group_block_list": {"student": ["cards.example"]},
                                    "group_allow_list": {"student": ["wiki.example/ok"]}})
    assert d(policy, "http://casino.example/rules/1").rule == "school.allow_list"
    assert d(policy, "http://casino.example/other").rule == "category"
    assert d(policy, "http://wiki.example/x").rule == "school.block_list"
    assert d(policy, "http://wiki.example/ok").rule == "group.allow_list"
    assert d(policy, "http://cards.example/").rule == "group.block_list"
    assert d(policy, "http://cards.example/", group="teacher").rule == "default.allow"


def test_default_action_per_group():
    policy = make_policy(filtering={**OPEN_FOR_STUDENTS, "default_action": {"student": "block"}})
    assert d(policy, "http://anything.example/").rule == "default.block"
    assert d(policy, "http://anything.example/", group="teacher").rule == "default.allow"


def test_lesson_modes():
    base = {"filtering": {"allow_list": ["school.kg"]}}
    open_lesson = make_policy(**base, lessons=[lesson(mode="open")])
    assert d(open_lesson, "http://news.example/", room="lab1").action == "allow"
    assert d(open_lesson, "http://news.example/", room="lab2").rule == "unsupervised.not_on_allow_list"
    assert d(open_lesson, "http://casino.example/", room="lab1").rule == "category"

    allow = make_policy(**base, lessons=[lesson(mode="allow_list", allow_list=["wiki.example"])])
    assert d(allow, "http://wiki.example/a", room="lab1").rule == "lesson.allow_list"
    assert d(allow, "http://school.kg/", room="lab1").rule == "school.allow_list"
    v = d(allow, "http://news.example/", room="lab1")
    assert (v.rule, v.params["lesson"]) == ("lesson.not_on_allow_list", "L1")

    none = make_policy(**base, lessons=[lesson(mode="no_internet")])
    assert d(none, "http://school.kg/", room="lab1").rule == "lesson.no_internet"
    assert d(none, "http://school.kg/", room="lab1", group="teacher").action == "allow"  # teachers unaffected
    after = MONDAY_MORNING + timedelta(hours=2)
    assert d(none, "http://school.kg/", room="lab1", at=after).rule == "school.allow_list"

    other_group = make_policy(**base, lessons=[lesson(group="grade9")])
    assert d(other_group, "http://news.example/", room="lab1").rule == "unsupervised.not_on_allow_list"


def test_bans_win_over_everything():
    ban = {"id": "B1", "seat": "lab1-07", "until": (MONDAY_MORNING + timedelta(minutes=30)).isoformat(),
           "by": "t.aliev", "reason": "games"}
    policy = make_policy(filtering={"allow_list": ["school.kg"]}, bans=[ban], lessons=[lesson()])
    v = d(policy, "http://school.kg/", room="lab1", seat="lab1-07")
    assert (v.action, v.rule, v.clauses) == ("block", "ban", ("000 §7.3",))
    assert v.params["by"] == "t.aliev"
    assert d(policy, "http://school.kg/", room="lab1", seat="lab1-08").action == "allow"
    later = MONDAY_MORNING + timedelta(minutes=31)
    assert d(policy, "http://school.kg/", room="lab1", seat="lab1-07", at=later).action == "allow"
    by_user = make_policy(bans=[{**ban, "seat": None, "os_user": "aibek"}])
    assert d(by_user, "http://x.example/", group="teacher", os_user="aibek").rule == "ban"


def test_weekly_schedule_and_holidays():
    policy = make_policy(filtering={
        "unsupervised": {"student": "open"},
        "schedules": {"student": [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "15:00"}],
                      "teacher": [{"days": [5], "start": "22:00", "end": "02:00"}]},
        "holidays": ["2025-03-08"]})
    assert d(policy, "http://x.example/").action == "allow"  # Monday 10:15 Bishkek
    evening = datetime(2025, 3, 3, 10, 30, tzinfo=UTC)  # 16:30 in Bishkek
    assert d(policy, "http://x.example/", at=evening).rule == "schedule.outside_hours"
    assert d(policy, "http://x.example/", at=datetime(2025, 3, 3, 16, 15)).rule == "schedule.outside_hours"
    assert d(policy, "http://x.example/", at=datetime(2025, 3, 3, 9, 15)).action == "allow"  # naive = local
    saturday_23h = datetime(2025, 3, 8, 23, 0)
    sunday_1h = datetime(2025, 3, 9, 1, 0)
    sunday_3h = datetime(2025, 3, 9, 3, 0)
    assert d(policy, "http://x.example/", group="teacher", at=saturday_23h).rule == "schedule.holiday"
    assert d(policy, "http://x.example/", group="teacher", at=sunday_1h).action == "allow"  # past midnight
    assert d(policy, "http://x.example/", group="teacher", at=sunday_3h).rule == "schedule.outside_hours"
    # a running lesson lifts the schedule
    with_lesson = make_policy(filtering={"schedules": {"student": [{"days": [6]}]}},
                              lessons=[lesson(at=evening)])
    assert d(with_lesson, "http://x.example/", at=evening, room="lab1").action == "allow"


def test_unsupervised_no_internet_and_bad_policy_errors():
    policy = make_policy(filtering={"unsupervised": {"teacher": "no_internet"}})
    assert d(policy, "http://x.example/", group="teacher").rule == "unsupervised.no_internet"
    with pytest.raises(PolicyError, match="must be one of"):
        FilterPolicy.from_bundle({"filtering": {"unsupervised": {"student": "sometimes"}}})
    with pytest.raises(PolicyError, match="HH:MM"):
        FilterPolicy.from_bundle({"filtering": {"schedules": {"student": [{"start": "8am"}]}}})
    with pytest.raises(PolicyError, match="time zone"):
        FilterPolicy.from_bundle({"filtering": {"timezone": "Mars/Olympus"}})
    with pytest.raises(PolicyError, match="no time zone"):
        FilterPolicy.from_bundle({"bans": [{"id": "b", "until": "2025-01-01T10:00"}]})


def test_unknown_group_is_treated_as_student():
    policy = make_policy()
    assert d(policy, "http://news.example/", group="visitors").rule == "unsupervised.not_on_allow_list"


def h(policy, host, group="student", **kw):
    return decide_host(policy, INDEX, host=host, group=group, at=MONDAY_MORNING, **kw)


def test_client_hello_decisions():
    policy = make_policy(filtering={**OPEN_FOR_STUDENTS, "passthrough_hosts": ["gov.kg"],
                                    "intercept_hosts": ["video.example"], "block_list": ["wiki.example/x"]})
    assert (h(policy, "emis.edu.gov.kg").action, h(policy, "emis.edu.gov.kg").rule) == ("passthrough", "isuo")
    assert h(policy, "tax.gov.kg").action == "passthrough"
    bank = h(policy, "online.bank.example")  # blocked for students, but never intercepted
    assert (bank.action, bank.intercept_tls) == ("block", False)
    assert h(policy, "bank.example", group="teacher").rule == "personal_data_category"
    search = h(policy, "www.google.kg")
    assert (search.action, search.rule, search.engine) == ("intercept", "safe_search", "google")
    assert h(policy, "video.example").rule == "intercept_hosts"
    casino = h(policy, "casino.example")
    assert (casino.action, casino.intercept_tls, casino.categories) == ("block", True, ("gambling",))
    assert h(policy, "mixed.example").rule == "path_rules"
    assert h(policy, "wiki.example").rule == "path_rules"
    assert h(policy, "plain.example").action == "passthrough"
    no_safe = make_policy(filtering={**OPEN_FOR_STUDENTS, "safe_search": False})
    assert h(no_safe, "www.google.kg").action == "passthrough"


def test_client_hello_whole_host_blocks():
    ban = {"id": "B", "seat": "s1", "until": (MONDAY_MORNING + timedelta(hours=1)).isoformat()}
    policy = make_policy(bans=[ban], filtering={"allow_list": ["wiki.example", "school.kg/lessons"]})
    isuo = h(policy, "emis.edu.gov.kg", seat="s1")
    assert (isuo.action, isuo.rule, isuo.intercept_tls) == ("block", "ban", False)
    assert h(policy, "mixed.example", seat="s1").rule == "ban"
    # outside a lesson: allow-listed hosts pass, others block, partly listed hosts are looked into
    assert h(policy, "wiki.example").action == "passthrough"
    assert h(policy, "mixed.example").action == "block"
    assert h(policy, "school.kg").rule == "path_rules"


def test_decide_marks_tls_interception_consistently_with_decide_host():
    policy = make_policy(filtering=OPEN_FOR_STUDENTS)
    for url, expected in [("https://casino.example/", True), ("https://plain.example/", False),
                          ("https://www.google.com/search?q=x", True), ("https://mixed.example/ok", True),
                          ("https://emis.edu.gov.kg/", False)]:
        v = d(policy, url)
        assert v.intercept_tls is expected, url
        assert h(policy, url.split("/")[2]).intercept_tls is expected, url


hosts = st.sampled_from(["casino.example", "cards.example", "bank.example", "mixed.example", "wiki.example",
                         "emis.edu.gov.kg", "www.google.kg", "school.kg", "x.example"])
paths = st.sampled_from(["/", "/bad", "/bad/x", "/lessons/1", "/search?q=a"])
groups = st.sampled_from(["student", "teacher", "grade9"])
modes = st.sampled_from(["open", "allow_list", "no_internet"])
times = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(hosts, paths, groups, modes, modes, times, st.booleans(), st.sampled_from(["lab1", "lab2", None]))
def test_every_verdict_names_its_rule(host, path, group, lesson_mode, unsupervised, at, banned, room):
    policy = make_policy(
        filtering={"unsupervised": {"student": unsupervised}, "allow_list": ["school.kg/lessons"],
                   "schedules": {"grade9": [{"days": [0, 2], "start": "09:00", "end": "12:00"}]},
                   "holidays": ["2025-03-08"]},
        lessons=[lesson(mode=lesson_mode, at=at, allow_list=["wiki.example"])],
        bans=[{"id": "B", "seat": "s1", "until": (at + timedelta(minutes=1)).isoformat()}] if banned else [])
    v = decide(policy, INDEX, url=f"https://{host}{path}", group=group, at=at, room=room,
               seat="s1" if banned else "s2")
    assert v.rule in RULES and v.action in ("allow", "block") and v.clauses
    assert v.reason
    if banned:
        assert v.rule == "ban"
    hv = decide_host(policy, INDEX, host=host, group=group, at=at, room=room)
    assert hv.action in ("passthrough", "intercept", "block") and hv.rule
    if hv.action == "passthrough":
        # a passed-through host must be allowed whatever the path
        again = decide(policy, INDEX, url=f"https://{host}{path}", group=group, at=at, room=room)
        assert again.action == "allow"
    if hv.action == "block":
        assert v.action == "block" or banned
