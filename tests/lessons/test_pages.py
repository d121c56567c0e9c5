"""The teacher's pages without JavaScript: every action a form post answered by a redirect;
errors shown on the page in the reader's language; the seat map and the live stream."""

from __future__ import annotations

import re

from tests.lessons.conftest import PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def web_login(school, username: str) -> str:
    school.client.cookies.clear()
    form = school.client.get("/login")
    token = CSRF.search(form.text).group(1)
    r = school.client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token,
                                           "next": "/teach"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return CSRF.search(school.client.get("/teach").text).group(1)


def test_one_click_start_and_form_actions(school, now_periods):
    token = web_login(school, "aigul")
    home = school.client.get("/teach?lang=en")
    assert home.status_code == 200 and "Start the lesson" in home.text and "lab-1" in home.text
    r = school.client.post("/teach/start", data={"csrf_token": token, "period_id": now_periods["aigul"]},
                           follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/lessons/")
    url = r.headers["location"].split("?")[0]
    page = school.client.get(url)
    assert page.status_code == 200 and 'sse-connect="' + url + '/live"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path, data in (("ban", {"seat": "s2"}), ("allow", {"site": "kitep.kg"}), ("lock",
                                                                                  {"message": "Stop"}),
                       ("unlock", {}), ("eyes", {"seconds": "60"}), ("extend", {"minutes": "5"})):
        r = school.client.post(f"{url}/{path}", data={"csrf_token": token, **data}, follow_redirects=False)
        assert r.status_code == 303, (path, r.text[:500])
    seats = school.client.get(f"{url}/seats").text
    assert 'id="seat-s2"' in seats and "no internet" in seats
    # a bad site: the page again, with the message in the reader's language, nothing stored
    r = school.client.post(f"{url}/allow?lang=ru", data={"csrf_token": token, "site": "не сайт"})
    assert r.status_code == 422 and "error-summary" in r.text
    r = school.client.post(f"{url}/ban", data={"csrf_token": "wrong", "seat": "s1"}, follow_redirects=False)
    assert r.status_code == 403
    r = school.client.post(f"{url}/end", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    ended = school.client.get(url + "?lang=en")
    assert "Summary of the lesson" in ended.text and "kitep.kg" in ended.text


def test_pages_in_three_languages(school, now_periods):
    web_login(school, "boss")
    for lang in ("ky", "ru", "en"):
        for path in ("/teach", "/timetable", "/notices", "/lessons"):
            r = school.client.get(f"{path}?lang={lang}")
            assert r.status_code == 200, (path, lang)
            assert "None" not in re.sub(r"<[^>]+>", " ", r.text), (path, lang)
    assert "Менин сабактарым" in school.client.get("/teach?lang=ky").text
    assert "Мои уроки" in school.client.get("/teach?lang=ru").text


def test_csv_import_names_bad_rows(school):
    token = web_login(school, "boss")
    text = ("weekday,start,end,room,class,teacher\n1,08:00,08:45,lab-1,7-Б,aigul\n"
            "9,08:00,08:45,lab-1,7-Б,aigul\n2,10:00,09:00,lab-1,7-Б,aigul\n3,08:00,08:45,lab-7,7-Б,aigul\n"
            "4,08:00,08:45,lab-1,7-Б,nobody\n")
    r = school.client.post("/timetable/import?lang=en", data={"csrf_token": token, "csv_text": text})
    assert r.status_code == 422
    for line in ("<td>3</td>", "<td>4</td>", "<td>5</td>", "<td>6</td>"):
        assert line in r.text
    assert "lab-7" in r.text and "nobody" in r.text
    assert "08:45" not in school.client.get("/timetable").text.split("Add a period")[0]  # nothing imported
    good = "1;08:00;08:45;lab-1;7-Б;aigul\n1;08:50;09:35;lab-2;8-А;bakyt\n"
    r = school.client.post("/timetable/import", data={"csrf_token": token, "csv_text": good},
                           follow_redirects=False)
    assert r.status_code == 303
    assert school.client.get("/api/v1/timetable/periods").json()["periods"][1]["teacher"] == "bakyt"
