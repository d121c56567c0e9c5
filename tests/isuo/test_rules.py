"""Every ISUO cross-check rule, pure: plain data in, a draft (with its clauses) or None out."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from policy_server.isuo import rules
from policy_server.isuo.rules import Access, RegisteredUser, SeatHistory, WorkingTime

# 2026-11-10 is a Tuesday; 10:00 in Bishkek = 04:00 UTC
TUESDAY_10 = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)


def access(at: datetime = TUESDAY_10, login: str | None = "a.asanova", agent: str | None = "ag-1") -> Access:
    return Access(key="rec:1", at=at, login=login, seat="07" if agent else None, agent_id=agent)


def user(**kw) -> RegisteredUser:
    base = dict(
        user_id=1,
        full_name="Asanova Aigul",
        isuo_role="specialist",
        obligation_signed_on=date(2026, 9, 1),
        obligation_kept=True,
    )
    return RegisteredUser(**{**base, **kw})


def test_unknown_login():
    draft = rules.unknown_login(access(), None)
    assert draft.rule == "isuo.unknown_login" and draft.clauses == ("002 §4.4", "002 §5.1")
    assert rules.unknown_login(access(), user()) is None
    assert rules.unknown_login(access(login=None), None) is None  # a proxy session has no login


def test_no_obligation_missing_unkept_or_signed_later():
    assert rules.no_obligation(access(), user()) is None
    assert rules.no_obligation(access(), None) is None  # that is unknown_login's finding
    for kw in (
        {"obligation_signed_on": None},
        {"obligation_kept": False},
        {"obligation_signed_on": date(2026, 11, 11)},
    ):
        draft = rules.no_obligation(access(), user(**kw))
        assert draft is not None and draft.clauses == ("002 §4.4", "002 §5.1"), kw
        assert draft.params["user_id"] == 1


def test_after_blocked_counts_the_blocking_day_in_school_time():
    # 23:30 UTC on the 9th is 05:30 on the 10th in Bishkek: the blocking day
    late = datetime(2026, 11, 9, 23, 30, tzinfo=UTC)
    assert rules.after_blocked(access(at=late), user(blocked_on=date(2026, 11, 10))).clauses == (
        "002 §4.4",
        "002 §4.5",
    )
    assert rules.after_blocked(access(at=late), user(blocked_on=date(2026, 11, 11))) is None
    assert rules.after_blocked(access(), user()) is None


def test_after_left():
    draft = rules.after_left(access(), user(left_on=date(2026, 11, 1)))
    assert draft.rule == "isuo.after_left" and draft.severity == "critical" and draft.clauses == ("002 §4.4",)
    assert rules.after_left(access(), user(left_on=date(2026, 12, 1))) is None


def test_outside_hours_evening_day_off_holiday():
    working = WorkingTime(
        start=time(8), end=time(18), weekdays=frozenset(range(5)), holidays=frozenset({date(2026, 11, 7)})
    )
    assert rules.outside_hours(access(), working) is None
    evening = datetime(2026, 11, 10, 16, 0, tzinfo=UTC)  # 22:00 local
    draft = rules.outside_hours(access(at=evening), working)
    assert draft.params["why"] == "hours" and draft.params["local_time"] == "2026-11-10 22:00"
    assert draft.clauses == ("000 §5.6", "000 §6.4")
    saturday = datetime(2026, 11, 14, 4, 0, tzinfo=UTC)
    assert rules.outside_hours(access(at=saturday), working).params["why"] == "day_off"
    holiday = datetime(2026, 11, 7, 4, 0, tzinfo=UTC)
    assert rules.outside_hours(access(at=holiday), working).params["why"] == "holiday"
    # the end of the day is outside, its start inside
    assert rules.outside_hours(access(at=datetime(2026, 11, 10, 12, 0, tzinfo=UTC)), working) is not None
    assert rules.outside_hours(access(at=datetime(2026, 11, 10, 2, 0, tzinfo=UTC)), working) is None


def test_seat_state_scan_age_integrity_and_antivirus():
    at = TUESDAY_10
    fresh = SeatHistory(full_scans=(at - timedelta(days=2),))
    assert rules.seat_state_at(fresh, at).problems == ()
    nine = SeatHistory(full_scans=(at - timedelta(days=9),))
    state = rules.seat_state_at(nine, at)
    assert state.problems == ("scan_overdue",) and state.scan_age_days == 9.0
    # a scan after the access does not make the access compliant
    later = SeatHistory(full_scans=(at - timedelta(days=9), at + timedelta(hours=1)))
    assert rules.seat_state_at(later, at).problems == ("scan_overdue",)
    never_new = SeatHistory(known_since=at - timedelta(days=3))
    assert rules.seat_state_at(never_new, at).problems == ()
    never_old = SeatHistory(known_since=at - timedelta(days=30))
    assert rules.seat_state_at(never_old, at).problems == ("scan_overdue",)
    tampered = SeatHistory(
        full_scans=(at - timedelta(days=1),),
        baselines=(at - timedelta(days=5),),
        integrity_bad=(at - timedelta(days=2),),
    )
    assert rules.seat_state_at(tampered, at).problems == ("integrity_failing",)
    repaired = SeatHistory(
        full_scans=(at - timedelta(days=1),),
        baselines=(at - timedelta(days=1),),
        integrity_bad=(at - timedelta(days=2),),
    )
    assert rules.seat_state_at(repaired, at).problems == ()
    stale = SeatHistory(
        full_scans=(at - timedelta(days=1),), av_health=((at - timedelta(hours=5), "signatures_stale"),)
    )
    assert rules.seat_state_at(stale, at).problems == ("antivirus_signatures_stale",)
    healed = SeatHistory(
        full_scans=(at - timedelta(days=1),),
        av_health=((at - timedelta(hours=5), "signatures_stale"), (at - timedelta(hours=1), None)),
    )
    assert rules.seat_state_at(healed, at).problems == ()


def test_noncompliant_seat():
    nine = SeatHistory(full_scans=(TUESDAY_10 - timedelta(days=9),))
    draft = rules.noncompliant_seat(access(), nine)
    assert draft.rule == "isuo.noncompliant_seat" and draft.clauses == ("000 §5.4",)
    assert draft.params["scan_age_days"] == 9.0
    bad = SeatHistory(full_scans=(TUESDAY_10,), integrity_bad=(TUESDAY_10 - timedelta(hours=1),))
    assert rules.noncompliant_seat(access(), bad).clauses == ("000 §5.4", "000 §4.2")
    assert rules.noncompliant_seat(access(agent=None), nine) is None  # seat unknown: nothing to judge
    assert rules.noncompliant_seat(access(), None) is None


def test_check_access_one_key_per_rule_login_day():
    drafts = rules.check_access(access(), None, WorkingTime(), None)
    assert [d.rule for d in drafts] == ["isuo.unknown_login"]
    again = rules.check_access(access(at=TUESDAY_10 + timedelta(hours=1)), None, WorkingTime(), None)
    assert again[0].dedup_key == drafts[0].dedup_key
    assert rules.check_access(access(), user(), WorkingTime(), SeatHistory(full_scans=(TUESDAY_10,))) == []


def test_import_gaps_only_inside_the_covered_period():
    d = date(2026, 11, 10)
    proxy = [d, d + timedelta(days=1), d + timedelta(days=5)]
    assert rules.import_gaps(proxy, [d], covered_from=d, covered_until=d + timedelta(days=3)) == [
        d + timedelta(days=1)
    ]
    assert rules.import_gaps(proxy, [], covered_from=None, covered_until=None) == []
    draft = rules.import_gap(d, 3)
    assert draft.clauses == ("000 §5.6", "000 §3.2") and draft.params["sessions"] == 3


def test_review_overdue():
    due = date(2026, 12, 25)
    assert rules.review_overdue(due_on=due, signed_on_or_after_due=False, today=due) is None
    draft = rules.review_overdue(due_on=due, signed_on_or_after_due=False, today=due + timedelta(days=1))
    assert draft.rule == "isuo.review_overdue" and draft.clauses == ("002 §4.5", "002 §4.4")
    assert (
        rules.review_overdue(due_on=due, signed_on_or_after_due=True, today=due + timedelta(days=1)) is None
    )
    assert rules.review_overdue(due_on=None, signed_on_or_after_due=False, today=due) is None


def test_check_accesses_equals_check_access_on_each_keeping_the_first_draft_per_key():
    import random

    rnd = random.Random(5)
    logins = ["a.asanova", "b.bekova", "ghost", "c.left", None]
    users = {
        "a.asanova": user(),
        "b.bekova": user(user_id=2, obligation_signed_on=None),
        "c.left": user(user_id=3, left_on=date(2026, 11, 12), blocked_on=date(2026, 11, 13)),
    }
    working = WorkingTime(holidays=frozenset({date(2026, 11, 11)}))
    histories = {
        "ag-1": SeatHistory(full_scans=(TUESDAY_10 - timedelta(days=6),)),
        "ag-2": SeatHistory(full_scans=(TUESDAY_10 - timedelta(days=20),)),
    }
    accesses = sorted(
        (
            Access(
                key=f"rec:{i}",
                at=TUESDAY_10 + timedelta(minutes=rnd.randint(0, 7 * 1440)),
                login=rnd.choice(logins),
                seat="07",
                agent_id=rnd.choice(["ag-1", "ag-2", None]),
            )
            for i in range(400)
        ),
        key=lambda a: a.at,
    )
    naive: dict[str, tuple] = {}
    for a in accesses:
        for d in rules.check_access(
            a, users.get(a.login) if a.login else None, working, histories.get(a.agent_id or "")
        ):
            naive.setdefault(d.dedup_key, (d, a))
    fast = rules.check_accesses(accesses, users, working, histories)
    assert {k: (d, a.key) for k, (d, a) in naive.items()} == {d.dedup_key: (d, a.key) for d, a in fast}
    assert len({d.rule for d, _ in fast}) >= 6  # the sample reaches most rules


def test_student_lab_seat_for_records_the_proxy_did_not_see():
    a = access()
    draft = rules.student_lab_seat(a, student_lab=True, lesson_running=False)
    assert draft.rule == "isuo.student_lab" and draft.clauses == ("002 §4.4", "000 §6.8")
    assert rules.student_lab_seat(a, student_lab=True, lesson_running=True) is None
    assert rules.student_lab_seat(a, student_lab=False, lesson_running=False) is None
    linked = Access(key="rec:2", at=TUESDAY_10, login="x", seat="07", agent_id="ag-1", proxy_linked=True)
    assert rules.student_lab_seat(linked, student_lab=True, lesson_running=False) is None  # judged at ingest
