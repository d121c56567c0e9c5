"""Integers past the database's range answer 422 naming the field, never 500 (SQLite and
PostgreSQL): ids, offsets, limits, assignees in the JSON API and on the pages."""

from __future__ import annotations

import re

import pytest

HUGE = str(2**63 + 5)
TOO_BIG = str(2**31)  # one past the 32-bit INTEGER ids


@pytest.fixture
def admin(api):
    api.user("admin", "boss")
    return api.login("boss")


@pytest.mark.parametrize("path, field", [
    (f"/api/v1/incidents?offset={HUGE}", "offset"),
    ("/api/v1/incidents?offset=-1", "offset"),
    (f"/api/v1/incidents?limit={HUGE}", "limit"),
    (f"/api/v1/incidents/{TOO_BIG}", "incident_id"),
    (f"/api/v1/incidents/{HUGE}", "incident_id"),
    ("/api/v1/incidents/0", "incident_id"),
    (f"/api/v1/isuo/access?offset={HUGE}", "offset"),
])
def test_out_of_range_reads_are_422_naming_the_field(api, admin, path, field):
    answer = api.client.get(path)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]


@pytest.mark.parametrize("path", [f"/incidents/{HUGE}", "/incidents/abc", "/incidents/0"])
def test_a_page_with_a_bad_address_is_the_error_page_naming_the_field(api, admin, path):
    answer = api.client.get(path, headers={"Accept-Language": "ru"})
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("text/html")
    assert "Этот адрес неверен (incident_id)" in answer.text


def test_out_of_range_writes_are_422_naming_the_field(api, admin):
    for path, body in ((f"/api/v1/incidents/{HUGE}/ack", None),
                       (f"/api/v1/incidents/{HUGE}/resolve", {"reason": "x"}),
                       ("/api/v1/incidents/1/assign", {"assignee_id": int(HUGE)}),
                       ("/api/v1/incidents/1/assign", {"assignee_id": 0})):
        answer = api.client.post(path, json=body, headers=admin)
        assert answer.status_code == 422, (path, answer.text)
        field = "assignee_id" if "assign" in path else "incident_id"
        assert field in answer.json()["detail"], answer.text


def test_pages_take_any_page_number_and_assignee(api, admin):
    assert api.client.get(f"/incidents?page={HUGE}").status_code == 200
    assert api.client.get(f"/isuo?page={HUGE}").status_code == 200
    # an assignee past the range on the form is "no such person", not a server error
    from datetime import UTC, datetime

    from policy_server.db.models import Incident

    now = datetime.now(UTC)
    with api.db() as db:
        incident = Incident(rule="web.blocked", title="t", params={}, severity="low", clauses=[],
                            dedup_key="k", first_seen_at=now, last_seen_at=now, window_ends_at=now)
        db.add(incident)
        db.commit()
        incident_id = incident.id
    page = api.client.get(f"/incidents/{incident_id}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = api.client.post(f"/incidents/{incident_id}/assign", headers={"Accept-Language": "en"},
                             data={"csrf_token": token, "assignee_id": HUGE})
    assert answer.status_code == 422 and "That person does not exist or is disabled" in answer.text


@pytest.mark.parametrize("path, field", [
    (f"/people/{HUGE}", "person_id"),
    (f"/rooms/{HUGE}", "room_id"),
    (f"/api/v1/timetable/periods/{HUGE}", "period_id"),
])
def test_routes_without_bounds_still_answer_422_naming_the_field(api, admin, path, field):
    """The safety net (security/errors.py) for routes whose signature has no bounds yet:
    SQLite's OverflowError and PostgreSQL's "integer out of range" become a 422."""
    method = api.client.delete if path.startswith("/api/") else api.client.get
    answer = method(path, headers={"Accept-Language": "en", **admin})
    assert answer.status_code == 422, answer.text
    if path.startswith("/api/"):
        assert answer.json()["code"] == "request.out_of_range" and field in answer.json()["detail"]
    else:
        assert f"This address is not valid ({field})" in answer.text
