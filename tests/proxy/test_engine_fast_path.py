"""The per-request fast path (`Engine.decide`) gives exactly the full decision's verdict
(`Engine.decide_full`): same allow/block, rule, categories and clauses, for generated URLs,
subjects and instants over a policy with path entries (index and lists), bans, lessons and
weekly bands — instants are drawn around every boundary and minute edge, in any order, so the
per-minute cache is filled at one instant and read at another."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.proxy.engine import Engine
from filters.decision import host_has_path_rules
from filters.index import CategoryIndex, Overlay
from filters.policy import FilterPolicy
from policy_server.protocol import PolicyBundle

# Monday 2025-03-03 10:15:00 in Bishkek (UTC+6)
T0 = datetime(2025, 3, 3, 4, 15, tzinfo=UTC)
T0_S = T0.timestamp()

BAN_ENDS = T0 + timedelta(seconds=90.5)  # inside a minute
BAN2_ENDS = T0 + timedelta(seconds=180)  # on a whole minute
LESSON_STARTS = T0 - timedelta(seconds=30.25)
LESSON_ENDS = T0 + timedelta(seconds=230.7)
BAND_ENDS_S = 120.0  # grade9 may browse 09:00–10:17 on Mondays: the band ends at T0 + 2 min

INDEX = CategoryIndex.empty(Overlay({
    "casino.example": ["gambling"], "cards.example": ["games"], "bank.example": ["transactions"],
    "mixed.example/bad": ["porn"], "wiki.example": ["education"], "deep.sub.example/x": ["porn"],
}))


def _bundle() -> dict:
    return PolicyBundle.model_validate({
        "version": 7,
        "groups": [{"name": "student", "kind": "student", "os_users": ["stu"]},
                   {"name": "grade9", "kind": "student", "os_users": ["g9"]},
                   {"name": "teacher", "kind": "teacher", "os_users": ["tch"]}],
        "filtering": {
            "allow_list": ["school.kg", "open.kg/lessons", "wiki.example"],
            "block_list": ["news.kg/politics", "casino2.example"],
            "group_allow_list": {"grade9": ["games.kg/chess"]},
            "group_block_list": {"teacher": ["cards.example"]},
            "unsupervised": {"student": "open", "grade9": "allow_list"},
            "schedules": {"grade9": [{"days": [0], "start": "09:00", "end": "10:17"}]},
            "holidays": ["2025-03-08"],
        },
        "lessons": [{"id": "L1", "room": "lab1", "teacher": "t.aliev", "group": "student",
                     "mode": "allow_list", "allow_list": ["wiki.example", "lesson.kg/page"],
                     "starts_at": LESSON_STARTS.isoformat(),
                     "ends_at": LESSON_ENDS.isoformat()}],
        "bans": [{"id": "B1", "seat": "s1", "until": BAN_ENDS.isoformat(), "by": "t.aliev"},
                 {"id": "B2", "os_user": "tch", "until": BAN2_ENDS.isoformat(), "by": "admin"}],
    }).model_dump(mode="json")


def _engine() -> Engine:
    raw = _bundle()
    return Engine(PolicyBundle.model_validate(raw), FilterPolicy.from_bundle(raw), INDEX)


hosts = st.sampled_from([
    "casino.example", "www.casino.example", "CASINO.example", "casino.example.", "cards.example",
    "mixed.example", "a.mixed.example", "sub.example", "deep.sub.example", "x.deep.sub.example",
    "wiki.example", "school.kg", "open.kg", "news.kg", "games.kg", "lesson.kg", "casino2.example",
    "other.kg", "localhost", "127.0.0.1", "0x7f.1", "[::1]", "user@casino.example", "wiki.example@news.kg",
    "caf%C3%A9.kg", "кафе.kg", "a..b.kg", "",
])
paths = st.sampled_from([
    "/", "", "/bad", "/bad/x", "/badge", "/x", "/x/y", "/lessons", "/lessons/1", "/politics?id=1",
    "/chess", "/page", "/./bad", "/a/../bad", "//bad", "/%62ad", "?q=1", "#frag", "\\bad", "/p\t/x",
])
free_paths = st.text(alphabet="/ab.%?#@:\\\t", max_size=8)
schemes = st.sampled_from(["http://", "https://", "http://", "https://", "HTTP://", "", " http://", "ftp://"])
ports = st.sampled_from(["", "", "", ":80", ":8080", ":"])

edges = [0.0, BAN_ENDS.timestamp() - T0_S, BAN2_ENDS.timestamp() - T0_S, LESSON_STARTS.timestamp() - T0_S,
         LESSON_ENDS.timestamp() - T0_S, BAND_ENDS_S, 60.0, -60.0]
nudges = st.sampled_from([0.0, 1e-6, -1e-6, 5e-4, -5e-4, 1e-3, -1e-3, 0.3, -0.3, 20.0, -20.0])


def _near(edge: float, nudge: float, ulps: int) -> float:
    """An instant near an edge, down to the neighbouring floats (which `fromtimestamp` may round
    onto the edge itself)."""
    when = T0_S + edge + nudge
    for _ in range(abs(ulps)):
        when = math.nextafter(when, math.inf if ulps > 0 else -math.inf)
    return when


ulps = st.integers(min_value=-2, max_value=2)
subjects = st.tuples(st.sampled_from([("student", "stu"), ("grade9", "g9"), ("teacher", "tch"),
                                      ("student", None)]),
                     st.sampled_from(["s1", "s2", None]), st.sampled_from(["lab1", None]))


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_the_fast_path_gives_the_full_decisions_verdict(data):
    # A few hosts and subjects per run, many requests among them: the cache is filled by one
    # request and read by another of the same host, subject and minute, at another instant.
    pool_hosts = data.draw(st.lists(hosts, min_size=1, max_size=2), label="hosts")
    pool_subjects = data.draw(st.lists(subjects, min_size=1, max_size=2), label="subjects")
    anchors = data.draw(st.lists(st.sampled_from(edges), min_size=1, max_size=2), label="edges")
    instants = st.one_of(st.builds(_near, st.sampled_from(anchors), nudges, ulps),
                         st.builds(lambda edge, d: T0_S + edge + d, st.sampled_from(anchors),
                                   st.floats(min_value=-60, max_value=60, allow_nan=False)))
    engine = _engine()
    for _ in range(data.draw(st.integers(min_value=1, max_value=30), label="requests")):
        url = (data.draw(schemes) + data.draw(st.sampled_from(pool_hosts)) + data.draw(ports)
               + data.draw(st.one_of(paths, free_paths)))
        (group, user), seat, room = data.draw(st.sampled_from(pool_subjects))
        when = data.draw(instants)
        fast = engine.decide(url, group=group, user=user, seat=seat, room=room, when=when)
        full = engine.decide_full(url, group=group, user=user, seat=seat, room=room, when=when)
        assert fast == full, (url, group, user, seat, room, when - T0_S)


def test_the_fast_path_is_taken_for_hosts_without_path_entries_only():
    engine = _engine()
    when = T0_S + 30.0  # no boundary in this minute
    first = engine.decide("http://casino.example/a", group="teacher", user="t2", seat="s2", room=None,
                          when=when)
    assert not first.allowed and first.rule == "category"
    assert len(engine._url_cache) == 1
    again = engine.decide("http://casino.example/b/c?d", group="teacher", user="t2", seat="s2", room=None,
                          when=when + 5)
    assert again is first  # a dict lookup, the same object
    # hosts with a path entry under them (index or lists, also under a parent) are decided in full
    for url in ("http://mixed.example/ok", "http://a.mixed.example/", "http://x.deep.sub.example/",
                "http://news.kg/", "http://games.kg/", "http://lesson.kg/", "http://open.kg/"):
        engine.decide(url, group="teacher", user="t2", seat="s2", room=None, when=when)
    assert len(engine._url_cache) == 1
    # a minute in which a ban ends (not on the minute) is never cached
    engine.decide("http://other.kg/", group="teacher", user="t2", seat="s2", room=None,
                  when=BAN_ENDS.timestamp() - 10)
    assert len(engine._url_cache) == 1


def test_an_instant_rounded_onto_a_whole_minute_is_decided_in_that_minute():
    # B2 ends on a whole minute (T0 + 180 s); the float just below it is still in the minute
    # before by `when // 60`, but `fromtimestamp` rounds it to the microsecond: onto the minute.
    engine = _engine()
    subject = {"group": "teacher", "user": "tch", "seat": "s2", "room": None}
    assert engine.decide("http://other.kg/", when=T0_S + 150, **subject).rule == "ban"  # cached
    just_below = math.nextafter(T0_S + 180, 0)
    assert datetime.fromtimestamp(just_below, UTC) == BAN2_ENDS
    assert engine.decide("http://other.kg/", when=just_below, **subject).allowed


def test_host_has_path_rules_sees_the_index_every_list_and_parents():
    policy = FilterPolicy.from_bundle(_bundle())
    for host in ("mixed.example", "a.mixed.example", "deep.sub.example", "x.deep.sub.example", "open.kg",
                 "news.kg", "games.kg", "lesson.kg", "www.lesson.kg"):
        assert host_has_path_rules(policy, INDEX, host), host
    for host in ("casino.example", "sub.example", "wiki.example", "school.kg", "other.kg", "127.0.0.1"):
        assert not host_has_path_rules(policy, INDEX, host), host
    assert not host_has_path_rules(policy, None, "mixed.example")  # no index: the lists alone
