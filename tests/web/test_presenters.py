"""The console's pure decisions: roles, silent workstations, titles, filters, pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from policy_server.web import presenters as p


def test_roles_admin_acts_director_reads_without_personal_data_teacher_limited_to_rooms():
    roles = ("admin", "director", "teacher", "district")
    admin, director, teacher, district = (p.permissions_for(role) for role in roles)
    assert admin.act_on_incidents and admin.see_personal_data and admin.see_isuo_log
    assert director.see_incidents and not director.act_on_incidents and not director.see_personal_data
    assert not director.see_isuo_log
    assert teacher.see_incidents and not teacher.see_all_rooms and not teacher.act_on_incidents
    assert not district.see_incidents and not district.see_workstations
    assert p.permissions_for("someone-new") == district


def test_a_workstation_is_silent_after_ten_minutes():
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert p.minutes_silent(now - timedelta(minutes=9, seconds=59), now) is None
    assert p.minutes_silent(now - timedelta(minutes=10), now) == 10
    assert p.minutes_silent(now - timedelta(hours=2), now) == 120
    assert p.minutes_silent(None, now) is None
    naive = (now - timedelta(minutes=30)).replace(tzinfo=None)  # SQLite may hand back naive UTC
    assert p.minutes_silent(naive, now) == 30


def test_collector_health_from_the_last_heartbeat():
    health = {"collectors": {
        "usb": {"state": "failed", "detail": "sysfs not readable"},
        "antivirus": {"state": "ok"},
        "odd": {"state": "exploded"},  # an unknown state is shown as failed, not hidden
        "broken": "not a mapping",
    }}
    views = p.collectors_from_health(health)
    assert [(v.name, v.state) for v in views] == [
        ("antivirus", "ok"), ("broken", "failed"), ("odd", "failed"), ("usb", "failed")]
    assert views[3].detail == "sysfs not readable"
    assert p.collectors_from_health(None) == []


def test_trouble_sorts_first():
    now = datetime.now(UTC)

    def ws(hostname, last_seen, state="ok"):
        row = SimpleNamespace(id=hostname, hostname=hostname, room="Lab 1", seat=hostname[-2:],
                              last_seen_at=last_seen, policy_version=3, agent_version="0.1",
                              health={"collectors": {"heartbeat": {"state": state}}})
        return p.workstation_view(row, now)

    views = p.sort_workstations([ws("pc-01", now), ws("pc-02", now - timedelta(hours=1)),
                                 ws("pc-03", now, "degraded"), ws("pc-04", None)])
    assert [v.hostname for v in views][:3] == ["pc-02", "pc-03", "pc-04"]
    assert views[-1].hostname == "pc-01" and views[-1].healthy
    assert views[0].silent_minutes == 60


def test_incident_titles_translate_by_rule_and_fall_back_to_the_rule_title():
    assert p.incident_title("ru", "web.report", {"url": "http://x.example"}, "fallback") == \
        "Пользователь сообщил о странице: http://x.example"
    assert p.incident_title("ky", "web.report", {}, "A user reported a page") == "A user reported a page"
    assert p.incident_title("ru", "some.new.rule", {}, "Something new") == "Something new"


def test_filter_from_a_hand_edited_url_is_forgiving():
    f = p.IncidentFilter.from_query("acknowledged", "bogus", "3")
    assert (f.status, f.severity, f.page) == ("acknowledged", None, 3)
    assert p.IncidentFilter.from_query("x", None, "-4").page == 1
    assert p.IncidentFilter.from_query(None, None, "two").page == 1
    assert f.query(page=4) == "status=acknowledged&page=4"
    assert f.query(page=1) == "status=acknowledged"


def test_pagination():
    first = p.Pagination(page=1, per_page=25, total=51)
    assert (first.pages, first.offset, first.has_previous, first.has_next) == (3, 0, False, True)
    last = p.Pagination(page=3, per_page=25, total=51)
    assert (last.offset, last.has_next, last.has_previous) == (50, False, True)
    assert p.Pagination(page=1, per_page=25, total=0).pages == 1


def test_personal_data_is_removed_from_events_for_the_director():
    event = SimpleNamespace(id="e1", type="web.report", occurred_at=datetime.now(UTC), os_user="student7",
                            seat="07", data={"url": "http://x.example"}, clauses=["000 §8.3"])
    shown = p.event_view(event, p.permissions_for("director"))
    assert shown.os_user is None and shown.data == {} and shown.seat == "07"
    full = p.event_view(event, p.permissions_for("admin"))
    assert full.os_user == "student7" and full.data["url"] == "http://x.example"
