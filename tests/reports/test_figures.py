"""Every figure on hand-built weeks: a seat that never reported, a scan that stopped half-way,
a week crossing a holiday, and each control's way to fail."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from reports import data, figures
from tests.reports.builders import ALL_OK, at, week


def _with_silent_seat(w: data.SchoolWeek) -> data.SchoolWeek:
    silent = data.Seat("never", "Lab 1 / pc-9", w.period.start - timedelta(days=3))
    return replace(w, seats=(*w.seats, silent))


def test_a_healthy_week_passes_every_control_with_its_clause():
    w = week()
    controls = {c.key: c for c in figures.controls_of(w)}
    assert {k: (c.passed, c.total) for k, c in controls.items()} == {
        "agent_reporting": (3, 3),
        "av_full_scan": (3, 3),
        "av_signatures": (3, 3),
        "integrity": (3, 3),
        "usb": (3, 3),
        "idle_lock": (3, 3),
        "filter": (3, 3),
        "backups": (1, 1),
    }
    assert controls["av_full_scan"].clauses == ("000 §5.4",)
    assert controls["integrity"].clauses == ("000 §4.2",)
    assert controls["usb"].clauses == ("000 §6.5",)
    assert controls["idle_lock"].clauses == ("000 §6.4", "000 §6.8")
    assert controls["filter"].clauses == ("001 §2.11",)
    assert controls["agent_reporting"].clauses == controls["backups"].clauses == ("000 §3.2",)
    assert figures.overall(list(controls.values())) == (figures.GOOD, 100)


def test_a_seat_that_never_reported_fails_every_seat_control_and_counts_in_the_share():
    w = _with_silent_seat(week())
    assert (figures.seats_reported(w).passed, figures.seats_reported(w).total) == (3, 4)
    for control in figures.controls_of(w):
        if control.key == "backups":
            continue
        assert "Lab 1 / pc-9" in control.failing, control.key
        assert (control.passed, control.total) == (3, 4), control.key
    assert figures.overall(figures.controls_of(w))[0] == figures.FAILING  # 75 % < 80 %


def test_a_scan_that_stopped_half_way_is_no_proof():
    w = week()
    last = w.period.school_days()[-1]
    half = (
        data.Event("a2", "av.scan.started", at(last, 10), {"kind": "full", "scan_id": "s"}),
        data.Event("a2", "av.scan.progress", at(last, 11), {"scan_id": "s", "files": 500}),
    )
    scans = {k: v for k, v in w.full_scans.items() if k != "a2"}
    c = figures.av_full_scan(replace(w, events=w.events + half, full_scans=scans))
    assert (c.passed, c.total, c.failing, c.extra["unfinished"]) == (2, 3, ("Lab 1 / pc-2",), 1)


def test_a_full_scan_older_than_seven_days_fails():
    w = week()
    c = figures.av_full_scan(replace(w, full_scans={**w.full_scans, "a1": w.period.end - timedelta(days=8)}))
    assert c.failing == ("Lab 1 / pc-1",)


def test_a_week_crossing_a_holiday_expects_no_heartbeat_on_it():
    w = week(2026, 18)  # 27 April – 3 May 2026: 1 May (Friday) is Labour Day
    assert date(2026, 5, 1) in w.period.holidays
    days = w.period.school_days()
    assert days == [date(2026, 4, 27), date(2026, 4, 28), date(2026, 4, 29), date(2026, 4, 30)]
    beats = {**w.heartbeat_days, "a3": frozenset(days[:-1])}  # a3 silent on Thursday
    c = figures.agent_reporting(replace(w, heartbeat_days=beats))
    assert (c.passed, c.failing, c.extra["school_days"]) == (2, ("Lab 1 / pc-3",), 4)


def test_a_week_of_holidays_only_expects_nothing():
    w = week(2026, 1)  # 1 January (Thursday) and 7 January (Wednesday) are holidays; others expected
    assert date(2026, 1, 1) in w.period.holidays and date(2026, 1, 7) not in w.period.holidays
    period = replace(w.period, holidays=frozenset(w.period.local_dates()))
    c = figures.agent_reporting(replace(w, period=period, heartbeat_days={}))
    assert (c.passed, c.total, c.applicable) == (0, 0, False)


def test_a_seat_enrolled_mid_week_is_expected_from_its_first_day():
    w = week()
    days = w.period.school_days()
    late = replace(w.seats[0], enrolled_at=at(days[2], 8))
    c = figures.agent_reporting(
        replace(w, seats=(late, *w.seats[1:]), heartbeat_days={**w.heartbeat_days, "a1": frozenset(days[2:])})
    )
    assert c.failing == ()


def test_signatures_stale_or_clamd_unreachable_fail():
    w = week()
    last = w.period.school_days()[-1]
    extra = (
        data.Event("a1", "av.health", at(last, 15), {"clamd_reachable": True, "signature_age_days": 9.5}),
        data.Event("a2", "av.health", at(last, 15), {"clamd_reachable": False, "signature_age_days": 0.2}),
    )
    c = figures.av_signatures(replace(w, events=w.events + extra))
    assert c.failing == ("Lab 1 / pc-1", "Lab 1 / pc-2")


def test_integrity_needs_a_baseline_and_no_open_finding():
    w = week()
    end = w.period.end
    incs = (
        data.Incident(1, "integrity.unauthorised_change", "high", end - timedelta(days=2), None, "a1"),
        data.Incident(
            2, "integrity.unauthorised_change", "high", end - timedelta(days=3), end - timedelta(days=1), "a2"
        ),
    )  # accepted before the end: clean
    c = figures.integrity(replace(w, incidents=incs, baselines=frozenset({"a1", "a2"})))
    assert c.failing == ("Lab 1 / pc-1", "Lab 1 / pc-3")
    tampered = (data.Event("a2", "integrity.tampered", end - timedelta(days=1), {}),)
    c = figures.integrity(replace(w, events=w.events + tampered))
    assert c.failing == ("Lab 1 / pc-2",)


def test_usb_counts_only_storage_attempts_and_fails_when_not_enforced():
    w = week()
    t = w.period.start + timedelta(days=1)
    evs = (
        data.Event("a1", "usb.blocked", t, {"device": {"kinds": ["storage"]}}),
        data.Event("a1", "usb.blocked", t, {"device": {"kinds": ["storage", "hid"]}}),
        data.Event("a2", "usb.blocked", t, {"device": {"kinds": ["wireless"]}}),
    )
    c = figures.usb(replace(w, events=w.events + evs))
    assert (c.passed, c.extra["storage_attempts"]) == (3, 2)
    assert figures.usb(replace(w, usb_enforced=False)).passed == 0
    beats = {
        **w.last_heartbeat,
        "a3": replace(w.last_heartbeat["a3"], collectors={**ALL_OK, "usb": "failed"}),
    }
    assert figures.usb(replace(w, last_heartbeat=beats)).failing == ("Lab 1 / pc-3",)


def test_idle_lock_fails_on_a_failed_lock_or_a_broken_collector():
    w = week()
    t = w.period.start + timedelta(days=2)
    evs = (data.Event("a1", "idle.lock_failed", t, {"error": "x"}), data.Event("a2", "idle.locked", t, {}))
    beats = {
        **w.last_heartbeat,
        "a3": replace(w.last_heartbeat["a3"], collectors={**ALL_OK, "idle": "degraded"}),
    }
    c = figures.idle_lock(replace(w, events=w.events + evs, last_heartbeat=beats))
    assert (c.failing, c.extra["locks"], c.extra["failures"]) == (("Lab 1 / pc-1", "Lab 1 / pc-3"), 1, 1)


def test_filter_needs_the_proxy_running_and_the_policy_in_force():
    w = week()
    beat = w.last_heartbeat["a1"]
    versions = (*w.policy_versions, (4, beat.at - timedelta(minutes=5)))  # too new to have arrived
    beats = {
        **w.last_heartbeat,
        "a2": replace(beat, policy_version=2),
        "a3": replace(beat, collectors={**ALL_OK, "proxy": "stopped"}),
    }
    c = figures.filter_current(replace(w, policy_versions=versions, last_heartbeat=beats))
    assert c.failing == ("Lab 1 / pc-2", "Lab 1 / pc-3")
    versions = (*w.policy_versions, (4, beat.at - timedelta(hours=2)))
    assert figures.filter_current(replace(w, policy_versions=versions)).passed == 0


def test_backups_made_in_the_period():
    w = week()
    assert figures.backups(w).extra["count"] == 1
    c = figures.backups(replace(w, backups=(w.period.start - timedelta(days=1),)))
    assert (c.passed, c.total) == (0, 1)


def test_incidents_by_severity_with_median_time_to_resolve():
    w = week()
    s, e = w.period.start, w.period.end
    h = timedelta(hours=1)
    incs = (
        data.Incident(1, "av.threat", "high", s + 10 * h, s + 12 * h),
        data.Incident(2, "av.threat", "high", s + 20 * h, s + 26 * h),
        data.Incident(3, "av.threat", "high", s + 30 * h, s + 40 * h),
        data.Incident(4, "usb.blocked", "high", s - 30 * h, None),  # open from before
        data.Incident(5, "net.bypass", "medium", s - 50 * h, s + 1 * h),  # resolved in the week
        data.Incident(6, "web.alert", "low", e - h, e + h),
    )  # resolved after: open at the end
    f = figures.incidents(replace(w, incidents=incs))
    assert f["high"] == {"opened": 3, "resolved": 3, "open": 1, "median_hours": 6.0}
    assert f["medium"] == {"opened": 0, "resolved": 1, "open": 0, "median_hours": 51.0}
    assert f["low"] == {"opened": 1, "resolved": 0, "open": 1, "median_hours": None}
    assert f["critical"] == {"opened": 0, "resolved": 0, "open": 0, "median_hours": None}


def test_blocked_attempts_are_counts_by_category_only():
    w = replace(week(), blocked_by_category={"games": 5, "adult": 9, "other": 5})
    assert list(figures.blocked(w).items()) == [("adult", 9), ("games", 5), ("other", 5)]


def test_report_queue_received_decided_and_overdue():
    w = week()
    s, e = w.period.start, w.period.end
    h = timedelta(hours=1)
    evs = tuple(
        data.Event("a1", t, s + k * h, {})
        for k, t in enumerate(("web.report", "web.report", "web.unblock_request", "web.report"), start=1)
    )
    incs = (
        data.Incident(1, "web.report", "medium", s + h, s + 5 * h),
        data.Incident(2, "web.unblock_request", "low", s + 3 * h, s + 4 * h),
        data.Incident(3, "web.report", "medium", e - 50 * h, None),  # open > 48 h
        data.Incident(4, "web.report", "medium", e - 10 * h, None),
    )  # open, not yet overdue
    q = figures.queue(replace(w, events=w.events + evs, incidents=incs))
    assert q == {"received": 4, "decided": 2, "median_hours": 2.5, "open_over_48h": 1}


def test_lessons_run_and_allow_lists():
    w = week()
    s = w.period.start
    ls = (
        data.Lesson("l1", s + timedelta(days=1), True),
        data.Lesson("l2", s + timedelta(days=2), False),
        data.Lesson("l0", s - timedelta(days=1), True),
    )
    assert figures.lessons(replace(w, lessons=ls)) == {"run": 2, "allow_list": 1}


def test_isuo_findings_of_the_period_by_rule():
    w = week()
    s = w.period.start
    incs = (
        data.Incident(1, "isuo.storage", "high", s + timedelta(hours=5), None),
        data.Incident(2, "isuo.unlocked", "medium", s + timedelta(hours=6), None),
        data.Incident(3, "isuo.unlocked", "medium", s + timedelta(hours=7), s + timedelta(hours=9)),
        data.Incident(4, "isuo.unlocked", "medium", s - timedelta(hours=7), None),
    )
    assert figures.isuo_findings(replace(w, incidents=incs)) == {"isuo.storage": 1, "isuo.unlocked": 2}


def test_summary_puts_regressions_first_and_names_seats_failing_for_more_than_a_week():
    before = week(2026, 48)
    before = replace(before, full_scans={k: v for k, v in before.full_scans.items() if k != "a3"})
    now = week(2026, 49)
    beats = {
        **now.last_heartbeat,
        "a1": replace(now.last_heartbeat["a1"], collectors={**ALL_OK, "idle": "failed"}),
    }
    now = replace(
        now, full_scans={k: v for k, v in now.full_scans.items() if k != "a3"}, last_heartbeat=beats
    )
    s = figures.summarise(now, [week(2026, 47), before])
    assert s.controls[0].key == "idle_lock"
    assert s.regressions == [{"key": "idle_lock", "before": 1.0, "now": 0.667}]
    assert s.failing_long == [{"seat": "Lab 1 / pc-3", "controls": ["av_full_scan"]}]
    assert [t["period"] for t in s.trend] == ["2026-W47", "2026-W48", "2026-W49"]
    assert s.trend[0]["state"] == figures.GOOD and s.state == figures.FAILING
    agg = s.aggregates()
    assert agg["controls"]["idle_lock"] == {"passed": 2, "total": 3}
    assert "pc-" not in repr(agg)  # no seat names leave the school


def test_report_queue_from_the_filtering_console_when_the_school_has_one():
    w = week()
    s, e = w.period.start, w.period.end
    h = timedelta(hours=1)
    items = (
        (s + h, s + 3 * h),
        (s + 2 * h, s + 8 * h),
        (e - 60 * h, None),
        (s - 10 * h, e + h),
        (e - 5 * h, None),
    )
    q = figures.queue(replace(w, queue=items))
    assert q == {"received": 0, "decided": 2, "median_hours": 4.0, "open_over_48h": 2}
