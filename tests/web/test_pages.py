"""The pages through the real app on a real (SQLite) database, without a browser.

Cheap checks: language choice, login errors, CSRF, roles, the incident actions.
The same flows in real Chromium against a real server process: test_browser.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from policy_server.db.models import AuditRecord, Incident
from tests.web.conftest import PASSWORD, csrf_of, login


def test_login_page_is_kyrgyz_by_default_russian_for_a_russian_browser(client):
    assert "Кирүү" in client.get("/login").text
    assert 'lang="ky"' in client.get("/login").text
    russian = client.get("/login", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert "Войти" in russian.text and "Имя пользователя" in russian.text


def test_language_switch_sticks_in_a_cookie(client):
    first = client.get("/login?lang=en")
    assert "User name" in first.text
    assert first.cookies.get("lang") == "en"
    assert "User name" in client.get("/login", headers={"Accept-Language": "ru"}).text


def test_switcher_links_keep_the_filters(client, school):
    login(client, school.person("admin"))
    html = client.get("/incidents?status=new&severity=high&lang=ru").text
    assert 'href="/incidents?status=new&amp;severity=high&amp;lang=ky"' in html


def test_anonymous_pages_redirect_to_login_and_back(client):
    answer = client.get("/incidents?status=new", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fincidents%3Fstatus%3Dnew"


def test_login_sets_a_httponly_samesite_session_cookie(client, school):
    answer = login(client, school.person("admin"))
    assert answer.status_code == 303 and answer.headers["location"] == "/incidents"
    cookie = answer.headers["set-cookie"].lower()
    assert "kalkan_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_wrong_password_is_refused_with_a_clear_message(client, school):
    username = school.person("admin")
    client.cookies.set("lang", "ru")
    answer = login(client, username, "wrong-password")
    assert answer.status_code == 401
    assert "Неверное имя пользователя или пароль" in answer.text
    answer = login(client, username, "wrong-password")
    assert "kalkan_session" not in answer.headers.get("set-cookie", "")
    client.cookies.set("lang", "en")
    answer = login(client, username, "wrong-password")
    assert "Wrong user name or password" in answer.text
    assert f'value="{username}"' in answer.text  # the name stays typed in


def test_a_disabled_account_is_refused_and_told_why(client, school):
    client.cookies.set("lang", "en")
    answer = login(client, school.person("teacher", disabled=True))
    assert answer.status_code == 401
    assert "This account is disabled (002 §4.4)" in answer.text


def test_login_form_without_its_csrf_cookie_is_refused(client, school):
    username = school.person("admin")
    token = csrf_of(client.get("/login").text)
    client.cookies.clear()
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token},
                         follow_redirects=False)
    assert answer.status_code == 403
    assert "kalkan_session" not in answer.headers.get("set-cookie", "")


def test_next_never_leaves_the_server(client, school):
    answer = login(client, school.person("admin"), next="//evil.example/steal")
    assert answer.headers["location"] == "/incidents"


def test_forged_posts_change_nothing(client, school, web_app):
    agent = school.workstation(hostname="pc-forge", room="Lab 9", seat="03")
    incident_id = school.incident(agent)
    login(client, school.person("admin"))
    for data in ({}, {"csrf_token": "forged"}):
        answer = client.post(f"/incidents/{incident_id}/acknowledge", data=data, follow_redirects=False)
        assert answer.status_code == 403
        answer = client.post(f"/incidents/{incident_id}/resolve", data={**data, "reason": "x"},
                             follow_redirects=False)
        assert answer.status_code == 403
    assert school.status_of(incident_id) == "new"
    with web_app.state.sessionmaker() as db:
        assert db.query(AuditRecord).filter_by(target=f"incident:{incident_id}").count() == 0


def test_admin_acknowledges_assigns_and_resolves_with_a_reason(client, school, web_app):
    agent = school.workstation(hostname="pc-act", room="Lab 2", seat="11")
    incident_id = school.incident(agent, url="http://casino.example/")
    admin = school.person("admin", full_name="Aibek Asanov")
    teacher = school.person("teacher")
    login(client, admin)
    client.cookies.set("lang", "en")
    page = client.get(f"/incidents/{incident_id}")
    assert "A user reported a page: http://casino.example/" in page.text
    assert 'Lab 2 / 07 <span class="muted">(pc-act)</span>' in page.text
    assert "student7" in page.text and "000 §8.3" in page.text
    token = csrf_of(page.text)

    done = client.post(f"/incidents/{incident_id}/acknowledge", data={"csrf_token": token})
    assert "The incident is acknowledged." in done.text
    assert school.status_of(incident_id) == "acknowledged"

    with web_app.state.sessionmaker() as db:
        from policy_server.people.service import get_person_by_username

        teacher_id = get_person_by_username(db, teacher).id
    client.post(f"/incidents/{incident_id}/assign",
                data={"csrf_token": token, "assignee_id": str(teacher_id)})

    empty = client.post(f"/incidents/{incident_id}/resolve", data={"csrf_token": token, "reason": "   "})
    assert empty.status_code == 422
    assert "Write the reason before resolving" in empty.text
    assert school.status_of(incident_id) == "acknowledged"

    resolved = client.post(f"/incidents/{incident_id}/resolve",
                           data={"csrf_token": token, "reason": "Site added to the block list"})
    assert "The incident is resolved." in resolved.text
    with web_app.state.sessionmaker() as db:
        incident = db.get(Incident, incident_id)
        assert incident.status == "resolved" and incident.resolution == "Site added to the block list"
        assert incident.assignee_id == teacher_id
        actions = [(t.actor, t.action) for t in incident.timeline]
    assert actions == [("system", "opened"), (admin, "acknowledged"), (admin, "assigned"),
                       (admin, "resolved")]
    timeline = resolved.text.split('id="timeline-h"')[1]
    assert "Site added to the block list" in timeline and admin in timeline

    again = client.post(f"/incidents/{incident_id}/resolve", data={"csrf_token": token, "reason": "twice"})
    assert again.status_code == 409
    assert "This incident is already resolved; nothing was changed." in again.text
    nobody = client.post(f"/incidents/{incident_id}/assign", data={"csrf_token": token, "assignee_id": "x"})
    assert "That person does not exist or is disabled; choose another." in nobody.text


def test_director_reads_counts_and_titles_without_user_names_and_cannot_act(client, school):
    agent = school.workstation(hostname="pc-dir", room="Lab 3", seat="05")
    incident_id = school.incident(agent, os_user="pupil-secret-name")
    login(client, school.person("director"))
    listing = client.get("/incidents?lang=en")
    assert f'href="/incidents/{incident_id}"' in listing.text
    assert "pupil-secret-name" not in listing.text
    detail = client.get(f"/incidents/{incident_id}")
    assert "pupil-secret-name" not in detail.text
    assert 'Lab 3 / 07 <span class="muted">(pc-dir)</span>' in detail.text  # where is not personal data
    assert "/acknowledge" not in detail.text and "/resolve" not in detail.text
    token = csrf_of(detail.text)  # the logout form's token is a real one: still refused by role
    answer = client.post(f"/incidents/{incident_id}/acknowledge", data={"csrf_token": token})
    assert answer.status_code == 403 and "Your role may not see or do this" in answer.text
    assert school.status_of(incident_id) == "new"
    assert client.get("/isuo").status_code == 403


def test_teacher_sees_only_the_rooms_they_teach_in(client, school):
    teacher = school.person("teacher")
    own = school.incident(school.workstation(hostname="pc-own", room="Lab T1", seat="01"), url="http://own.example/")
    other = school.incident(school.workstation(hostname="pc-other", room="Lab T2", seat="01"),
                            url="http://other.example/")
    school.teacher_teaches_in(teacher, "Lab T1")
    login(client, teacher)
    listing = client.get("/incidents?lang=en").text
    assert "http://own.example/" in listing and "http://other.example/" not in listing
    assert "Incidents of your rooms (Lab T1)" in listing
    assert client.get(f"/incidents/{own}").status_code == 200
    assert client.get(f"/incidents/{other}").status_code == 404
    stations = client.get("/workstations").text
    assert "pc-own" in stations and "pc-other" not in stations


def test_district_viewer_gets_nothing_from_the_school_console(client, school):
    login(client, school.person("district"))
    assert client.get("/incidents").status_code == 403
    assert client.get("/workstations").status_code == 403


def test_incident_list_filters_newest_first_and_pages(client, school):
    agent = school.workstation(hostname="pc-many", room="Lab P", seat="02")
    start = datetime.now(UTC) - timedelta(days=30)
    ids = [school.incident(agent, url=f"http://page{i}.example/", severity="critical" if i % 2 else "low",
                           at=start + timedelta(minutes=i)) for i in range(30)]
    login(client, school.person("admin"))
    critical = client.get("/incidents?severity=critical&lang=en").text
    assert "http://page29.example/" in critical and "http://page28.example/" not in critical
    assert critical.index("http://page29.example/") < critical.index("http://page27.example/")
    first = client.get("/incidents?lang=en").text
    assert "Page 1 of" in first and 'rel="next"' in first
    pages = [client.get(f"/incidents?page={n}").text for n in range(1, 6)]
    shown = [i for i in ids if any(f'href="/incidents/{i}"' in p for p in pages)]
    assert shown == ids  # every one reachable through the pages


def test_workstations_show_silence_and_collector_health(client, school):
    now = datetime.now(UTC)
    collectors = {"usb": {"state": "failed", "detail": "no sysfs"}, "heartbeat": {"state": "ok"}}
    school.workstation(hostname="pc-quiet", room="Lab W", seat="04", last_seen_at=now - timedelta(minutes=42),
                       policy_version=7, health={"collectors": collectors})
    school.workstation(hostname="pc-new", room="Lab W", seat="05")
    login(client, school.person("admin"))
    html = client.get("/workstations?lang=en").text
    assert "Not seen for 42 min" in html
    assert "no sysfs" in html and "Failed" in html and "Working" in html
    assert "Never reported" in html
    ru = client.get("/workstations?lang=ru").text
    assert "Нет связи 42 мин." in ru


def test_isuo_access_log_for_admin_only(client, school):
    agent = school.workstation(hostname="pc-isuo", room="Lab I", seat="09")
    school.isuo_access(agent, os_user="teacher-aigul", seat="09",
                       started_at=datetime.now(UTC) - timedelta(hours=1))
    login(client, school.person("admin"))
    html = client.get("/isuo?lang=en").text
    assert "teacher-aigul" in html and "emis.edu.gov.kg" in html and "Lab I / 09" in html
    assert "still open" in html
    client.cookies.clear()
    login(client, school.person("teacher"))
    assert client.get("/isuo").status_code == 403


def test_logout_needs_the_token_and_ends_the_session(client, school):
    login(client, school.person("admin"))
    page = client.get("/incidents")
    assert client.post("/logout", data={"csrf_token": "nope"}, follow_redirects=False).status_code == 403
    assert client.get("/incidents", follow_redirects=False).status_code == 200
    cookie = client.cookies.get("kalkan_session")
    answer = client.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert answer.headers["location"] == "/login"
    client.cookies.set("kalkan_session", cookie)  # a copied cookie no longer works either
    assert client.get("/incidents", follow_redirects=False).status_code == 303


def test_pages_are_not_cached_and_cannot_be_framed(client, school):
    login(client, school.person("admin"))
    answer = client.get("/incidents")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe" not in csp  # scripts only from the server itself
    assert "frame-ancestors 'none'" in csp


def test_class_teacher_sees_incidents_they_were_told_about(client, school, web_app):
    from policy_server.db.models import Notification
    from policy_server.people.service import get_person_by_username

    teacher = school.person("teacher")
    told = school.incident(school.workstation(hostname="pc-told", room="Lab N", seat="02"),
                           url="http://told.example/")
    with web_app.state.sessionmaker() as db:
        person = get_person_by_username(db, teacher)
        db.add(Notification(incident_id=told, person_id=person.id, role="class_teacher"))
        db.commit()
    login(client, teacher)
    assert "http://told.example/" in client.get("/incidents?lang=en").text
    assert client.get(f"/incidents/{told}").status_code == 200
