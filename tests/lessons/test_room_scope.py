"""A teacher of lab 1 cannot see or change lab 2 through any lesson, timetable or notices
route, page or JSON (walked over the app's routes, so a new route is covered by itself)."""

from __future__ import annotations

import re

from tests.lessons.test_pages import web_login

OWN_MODULES = ("policy_server.lessons.", "policy_server.timetable.", "policy_server.notices.")
PUBLIC = {"/static/htmx.min.js", "/static/htmx-sse.js", "/static/lessons.css", "/api/v1/lessons/activity"}


def all_routes(routes, prefix=""):
    """(full path, route) of every route, through included routers (FastAPI 0.16x)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from all_routes(inner.routes, prefix + route.include_context.prefix)
        elif getattr(route, "endpoint", None) is not None:
            yield prefix + route.path, route


def own_routes(app):
    for path, route in all_routes(app.routes):
        if route.endpoint.__module__.startswith(OWN_MODULES):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, path


def test_every_route_declares_a_scope(school):
    from policy_server.scope import route_scope

    checked = 0
    for path, route in all_routes(school.app.routes):
        if route.endpoint.__module__.startswith(OWN_MODULES):
            assert route_scope(route) is not None, path
            checked += 1
    assert checked >= 40


def test_teacher_of_lab1_cannot_reach_lab2(school, now_periods):
    # bakyt runs a lesson in lab-2 with a ban and a lock
    bakyt = school.login("bakyt")
    other = school.client.post("/api/v1/lessons", json={}, headers=bakyt).json()
    assert other["room"] == "lab-2"
    assert school.client.post(f"/api/v1/lessons/{other['id']}/bans", json={"seat": "s1"},
                              headers=bakyt).status_code == 200
    before = school.client.get(f"/api/v1/lessons/{other['id']}").json()
    with school.db() as db:
        from policy_server.db.models import Room
        from policy_server.lessons.models import LessonBan

        lab2 = db.query(Room).filter_by(name="lab-2").one().id
        ban_id = db.query(LessonBan).filter_by(lesson_id=other["id"]).one().id
    # and an unblock request from a lab-2 seat, held by bakyt's lesson
    from tests.lessons.test_lesson_requests import queue_id, send

    send(school, "lab-2", "s2", "web.unblock_request", "https://held.example/")
    request_id = str(queue_id(school, "held.example"))
    # aigul (lab-1 only) tries every route with lab-2's ids
    api_csrf = school.login("aigul")
    token = web_login(school, "aigul")
    api_csrf = {"X-CSRF-Token": token}  # one login session for pages and API
    values = {"lesson_id": other["id"], "period_id": str(now_periods["bakyt"]), "ban_id": ban_id,
              "scene_id": "999999", "notice_id": "999999", "request_id": request_id}
    tried = 0
    for method, path in own_routes(school.app):
        if path in PUBLIC:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        if path == "/timetable/seating":
            url += f"?class_id=2&room_id={lab2}"
        data = {"csrf_token": token, "seat": "s1", "site": "evil.example", "message": "x", "minutes": "5",
                "room_id": str(lab2), "period_id": str(now_periods["bakyt"]), "until": "23:00",
                "class_id": "2", "seat:s1": "Someone"}
        if path.startswith("/api/"):
            r = school.client.request(method, url, headers={**api_csrf}, json={
                "seat": "s1", "site": "evil.example", "minutes": 5, "room": "lab-2",
                "period_id": now_periods["bakyt"]})
        elif method == "GET":
            r = school.client.get(url)
        else:
            r = school.client.request(method, url, data=data, follow_redirects=False)
        tried += 1
        text = r.text
        if path.startswith("/api/v1/lessons") and method == "GET" and path != "/api/v1/lessons":
            assert r.status_code == 404, (method, path, r.status_code)
        if method != "GET" and path not in ("/teach/preset", "/teach/scenes", "/notices/read",
                                            "/api/v1/notices/read",
                                            "/notices/address"):
            assert r.status_code in (401, 403, 404, 409, 422), (method, path, r.status_code, text[:300])
        assert "lab-2" not in text or r.status_code >= 400, (method, path, r.status_code)
    assert tried >= 30
    # lab-2's lesson is exactly as it was
    school.login("bakyt")
    after = school.client.get(f"/api/v1/lessons/{other['id']}").json()
    for key in ("ends_at", "allowed_sites", "locked_seats", "eyes_until", "running", "extended_min"):
        assert after[key] == before[key], key
    assert [b["seat"] for b in after["bans"]] == ["s1"]
    held = school.client.get(f"/api/v1/lessons/{other['id']}/requests").json()["items"]
    assert [i["host"] for i in held] == ["held.example"]  # neither forwarded nor allowed by aigul
    # and aigul's lists show nothing of lab-2
    school.login("aigul")
    assert school.client.get("/api/v1/lessons").json()["lessons"] == []
    assert {p["room"] for p in school.client.get("/api/v1/timetable/periods").json()["periods"]} == {"lab-1"}
