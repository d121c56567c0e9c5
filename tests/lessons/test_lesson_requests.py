"""Unblock requests during a lesson go to the lesson's teacher first (issue 12/13): the
responsible person's queue shows them only when the teacher forwards them or the lesson ends
undecided; a report, or a request from a room without a lesson, is the queue's at once.  One
service (`policy_server.lessons.requests`) decides; the queue API, the queue page, the lesson
API and the lesson page all follow it.  Real app, real database (SQLite; PostgreSQL with -m
postgres)."""

from __future__ import annotations

import uuid

from policy_server.db.models import utcnow


def _event(kind: str, url: str, seat: str, comment: str = "") -> dict:
    data = {"url": url}
    if kind == "web.unblock_request":
        data.update(rule="category", comment=comment or None)
    return {"id": str(uuid.uuid4()), "type": kind, "occurred_at": utcnow().isoformat(),
            "subject": {"os_user": f"pupil-{seat}", "seat": seat}, "data": data}


def send(school, room: str, seat: str, kind: str, url: str, comment: str = "") -> None:
    _id, auth = school.agents[(room, seat)]
    assert school.post(auth, _event(kind, url, seat, comment))["accepted"]


def queue_hosts(school) -> set[str]:
    school.login("boss")
    r = school.client.get("/api/v1/filtering/queue")
    assert r.status_code == 200, r.text
    return {item["host"] for item in r.json()["items"]}


def queue_id(school, host: str) -> int:
    with school.db() as db:
        from sqlalchemy import select

        from policy_server.filtering.models import FilterRequest
        from policy_server.filtering.queue import sync_events

        sync_events(db)
        db.commit()
        return db.scalar(select(FilterRequest.id).where(FilterRequest.host == host))


def test_requests_in_a_lesson_go_to_its_teacher_first(school, now_periods):
    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    send(school, "lab-1", "s1", "web.unblock_request", "https://kitep.kg/book/1", "for the lesson")
    send(school, "lab-1", "s2", "web.unblock_request", "https://ted.com/talks")
    send(school, "lab-1", "s3", "web.unblock_request", "https://wiki.kg/")
    send(school, "lab-1", "s2", "web.report", "https://bad.example/")  # a report: the queue's at once
    send(school, "lab-2", "s1", "web.unblock_request", "https://other.kg/")  # no lesson in lab-2

    assert queue_hosts(school) == {"bad.example", "other.kg"}
    with school.db() as db:
        from policy_server.filtering.queue import counts

        assert counts(db)["received"] == 2  # the badge agrees with the list

    csrf = school.login("aigul")
    held = school.client.get(f"/api/v1/lessons/{lesson_id}/requests").json()["items"]
    assert {i["host"] for i in held} == {"kitep.kg", "ted.com", "wiki.kg"}
    assert [i["comments"] for i in held if i["host"] == "kitep.kg"] == [["for the lesson"]]
    page = school.client.get(f"/lessons/{lesson_id}").text
    assert "Unblock requests waiting for you" in page or "ачуу сурамдары" in page
    assert "kitep.kg" in page
    assert f"/lessons/{lesson_id}/requests/{queue_id(school, 'kitep.kg')}/forward" in page

    # the responsible person cannot decide what the lesson holds (it is not in the queue yet)
    kitep, wiki, ted = (queue_id(school, h) for h in ("kitep.kg", "wiki.kg", "ted.com"))
    boss = school.login("boss")
    r = school.client.post("/api/v1/filtering/queue/decide", headers=boss,
                           json={"ids": [kitep], "action": "reject", "reason": "no"})
    assert r.status_code == 404, r.text

    # another room's teacher can neither see nor forward them
    other = school.login("bakyt")
    assert school.client.get(f"/api/v1/lessons/{lesson_id}/requests").status_code == 404
    assert school.client.post(f"/api/v1/lessons/{lesson_id}/requests/{wiki}/forward",
                              headers=other).status_code == 404

    # the teacher forwards one: it is in the queue now, and no longer the lesson's
    csrf = school.login("aigul")
    r = school.client.post(f"/api/v1/lessons/{lesson_id}/requests/{wiki}/forward", headers=csrf)
    assert r.status_code == 200, r.text
    again = school.client.post(f"/api/v1/lessons/{lesson_id}/requests/{wiki}/forward", headers=csrf)
    assert again.status_code == 404
    assert "wiki.kg" in queue_hosts(school)

    # the teacher allows one for the lesson (as a plain form post): the site opens for the lesson,
    # the request is answered "allowed" and never reaches the queue
    school.login("aigul")
    form = school.client.get(f"/lessons/{lesson_id}").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = school.client.post(f"/lessons/{lesson_id}/requests/{kitep}/allow", data={"csrf_token": token},
                           follow_redirects=False)
    assert r.status_code == 303, r.text
    lesson = school.client.get(f"/api/v1/lessons/{lesson_id}").json()
    assert "kitep.kg" in lesson["allowed_sites"]
    with school.db() as db:
        from policy_server.filtering.models import FilterRequest

        row = db.get(FilterRequest, kitep)
        assert row.status == "allowed" and row.decision["scope"] == "lesson" and row.decided_by == "aigul"
    assert queue_hosts(school) == {"bad.example", "other.kg", "wiki.kg"}

    # ted.com stays undecided; the lesson ends: now it is the responsible person's
    csrf = school.login("aigul")
    assert school.client.post(f"/api/v1/lessons/{lesson_id}/end", headers=csrf).status_code == 200
    assert queue_hosts(school) == {"bad.example", "other.kg", "wiki.kg", "ted.com"}
    boss = school.login("boss")
    r = school.client.post("/api/v1/filtering/queue/decide", headers=boss,
                           json={"ids": [ted], "action": "reject", "reason": "not for school"})
    assert r.status_code == 200, r.text


def test_a_request_from_before_the_lesson_stays_in_the_queue(school, now_periods):
    send(school, "lab-1", "s1", "web.unblock_request", "https://early.kg/")
    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    send(school, "lab-1", "s2", "web.unblock_request", "https://early.kg/")  # the same page, in the lesson
    assert school.client.get(f"/api/v1/lessons/{lesson_id}/requests").json()["items"] == []
    assert queue_hosts(school) == {"early.kg"}


def test_the_live_seat_map_does_not_fold_requests(school, now_periods):
    """The live stream renders the seat map on a read-only session every few seconds: only the
    full page folds new events into the queue (a write) to list the held requests."""
    from sqlalchemy import func, select

    from policy_server.db.models import Person
    from policy_server.filtering.models import FilterRequestEvent
    from policy_server.lessons.models import Lesson
    from policy_server.lessons.pages import _lesson_context
    from policy_server.scope import viewer_for

    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    send(school, "lab-1", "s1", "web.unblock_request", "https://kitep.kg/")
    with school.db() as db:
        viewer = viewer_for(db, db.scalars(select(Person).where(Person.username == "aigul")).one())
        lesson = db.get(Lesson, lesson_id)
        live = _lesson_context(db, viewer, lesson)  # what the live stream renders
        assert live["held_requests"] == [] and live["state"] is not None
        assert db.scalar(select(func.count()).select_from(FilterRequestEvent)) == 0
        page = _lesson_context(db, viewer, lesson, held=True)
        assert [r.host for r in page["held_requests"]] == ["kitep.kg"]
