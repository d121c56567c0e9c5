"""The responsible person's timetable pages in real Chromium against a real server process:
a period added and a CSV with a bad row imported through the forms, the internet-use schedule
approved (and written into the student groups' schedule), a seating plan saved, the notices
page; screenshots in ky/ru/en at 1366×768 and 390 px."""

from __future__ import annotations

import pytest

from policy_server.policies.service import current_bundle
from tests.support.server import KalkanServerProcess

ADMIN = ("boss", "a-long-admin-password")
WIDER_THAN_SCREEN = """() => { const w = document.documentElement.clientWidth; const out = [];
  for (const el of document.querySelectorAll('body *')) { const r = el.getBoundingClientRect();
    if (r.right > w + 1) out.push(el.tagName + '.' + el.className + ' ' + Math.round(r.right)); }
  return out.slice(0, 10); }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with KalkanServerProcess(tmp_path_factory.mktemp("timetable-web")) as running:
        running.create_user("admin", *ADMIN, full_name="Бактыгүл Осмонова")
        running.create_user("teacher", "aigul", "a-long-teacher-password", full_name="Айгүл Асанова")
        for seat in ("01", "02", "03", "04"):
            running.enroll(f"pc-{seat}", seat=seat, room="Lab 1")
        yield running


def shots(page, url: str, name: str, artifacts_dir) -> None:
    for lang in ("ky", "ru", "en"):
        for width, height in ((1366, 768), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{url}{'&' if '?' in url else '?'}lang={lang}")
            page.screenshot(path=str(artifacts_dir / f"lesson-{name}-{lang}-{width}.png"), full_page=True)
            wide = page.evaluate(WIDER_THAN_SCREEN)
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= width + 1, (name, lang, width, wide)
    page.set_viewport_size({"width": 1366, "height": 768})


def test_timetable_forms_schedule_and_seating(server, browser, artifacts_dir):
    context = browser.new_context(ignore_https_errors=True, locale="en", viewport={"width": 1366,
                                                                                   "height": 768})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(server.url + "/login?lang=en")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("form.card button[type=submit]")
    page.goto(server.url + "/timetable?lang=en")
    # a period through the form
    page.select_option("#p-day", "1")
    page.fill("#p-start", "08:00")
    page.fill("#p-end", "08:45")
    page.fill("#p-class", "7-Б")
    page.select_option("#p-teacher", "aigul")
    page.click("form[action='/timetable/periods'] button")
    assert "The period is added." in page.inner_text("main")
    # a CSV with one bad row: nothing imported, the row named with its line and the fix
    page.fill("#csv-text", "2,09:00,09:45,Lab 1,7-Б,aigul\n2,10:00,9:00,Lab 1,7-Б,aigul\n")
    page.click("form[action='/timetable/import'] button")
    main = page.inner_text("main")
    assert "There is a problem" in main and "Swap them" in main
    assert page.inner_text("table.problems td") == "2"  # the second line
    # the internet-use schedule for this school year
    page.goto(server.url + "/timetable?lang=en")
    page.fill("#s-bands", "1 08:00 15:00\n2 08:00 15:00\n6 09:00 12:00")
    page.click("text=Save the schedule")
    assert "The internet-use schedule is saved." in page.inner_text("main")
    with server.db() as db:
        bands = current_bundle(db).filtering.schedules["student"]
    assert {(tuple(b.days), b.start, b.end) for b in bands} == {((0, 1), "08:00", "15:00"), ((5,), "09:00",
                                                                                             "12:00")}
    shots(page, server.url + "/timetable", "timetable-admin", artifacts_dir)
    # the seating plan of 7-Б in Lab 1
    page.goto(server.url + "/timetable?lang=en")
    page.click("text=7-Б")
    page.fill("#seat-02", "Асан Үсөнов")
    page.click("text=Save the seating plan")
    assert page.input_value("#seat-02") == "Асан Үсөнов"
    shots(page, page.url.split("&lang")[0], "seating", artifacts_dir)
    # the room's seat map: two seats on one place is refused, then each its own
    page.goto(server.url + "/timetable?lang=en")
    page.click("a[href^='/timetable/layout']")
    assert page.query_selector("#place-01") is not None, page.inner_text("main")[:800]
    page.fill("#place-01", "1,6")
    page.fill("#place-02", "1,6")
    page.click("text=Save the seat map")
    assert "Give each seat its own place" in page.inner_text("main")
    page.fill("#place-01", "1,6")
    page.fill("#place-02", "2,1")
    page.click("text=Save the seat map")
    assert "The seat map is saved." in page.inner_text("main")
    assert page.input_value("#place-01") == "1,6" and page.input_value("#place-02") == "2,1"
    shots(page, page.url.split("&done")[0].split("?done")[0], "layout", artifacts_dir)
    shots(page, server.url + "/notices", "notices-admin", artifacts_dir)
    context.close()


def test_held_unblock_request_on_the_lesson_page(server, browser, artifacts_dir):
    """A student's unblock request during the lesson waits on the teacher's lesson page (not in
    the responsible person's queue); the teacher sends it on with one click (a plain form)."""
    import uuid
    from datetime import timedelta

    from policy_server.db.models import Person, PersonRoom, Room, utcnow

    with server.db() as db:
        room = db.query(Room).filter_by(name="Lab 1").one()
        aigul = db.query(Person).filter_by(username="aigul").one()
        if db.get(PersonRoom, (aigul.id, room.id)) is None:
            db.add(PersonRoom(person_id=aigul.id, room_id=room.id))
        db.commit()
    with server.login("aigul", "a-long-teacher-password") as teacher:
        r = teacher.post("/api/v1/lessons", json={"room": "Lab 1",
                                                  "ends_at": (utcnow() + timedelta(minutes=30)).isoformat()})
        assert r.status_code == 200, r.text
        lesson_id = r.json()["id"]
    _agent, token = server.enroll("pc-held", seat="05", room="Lab 1")
    event = {"id": str(uuid.uuid4()), "type": "web.unblock_request", "occurred_at": utcnow().isoformat(),
             "subject": {"os_user": "pupil05", "seat": "05"},
             "data": {"url": "https://kitep.kg/book", "rule": "category", "comment": "для проекта"}}
    with server.agent_client(token) as agent:
        assert agent.post("/api/v1/events", json={"events": [event]}).status_code == 200
    with server.login(*ADMIN) as admin:
        assert [i["host"] for i in admin.get("/api/v1/filtering/queue").json()["items"]] == []

    context = browser.new_context(ignore_https_errors=True, locale="en", viewport={"width": 1366,
                                                                                   "height": 768})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(server.url + "/login?lang=en")
    page.fill("#username", "aigul")
    page.fill("#password", "a-long-teacher-password")
    page.click("form.card button[type=submit]")
    page.goto(f"{server.url}/lessons/{lesson_id}?lang=en")
    held = page.inner_text("section.held-requests")
    assert "Unblock requests waiting for you" in held and "kitep.kg" in held and "для проекта" in held
    shots(page, f"{server.url}/lessons/{lesson_id}", "held-requests", artifacts_dir)
    page.goto(f"{server.url}/lessons/{lesson_id}?lang=en")
    page.click("section.held-requests button:has-text('Send to the responsible person')")
    assert "The request is sent to the responsible person's queue." in page.inner_text("main")
    assert page.query_selector("section.held-requests") is None
    context.close()
    with server.login(*ADMIN) as admin:
        assert [i["host"] for i in admin.get("/api/v1/filtering/queue").json()["items"]] == ["kitep.kg"]
