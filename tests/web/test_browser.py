"""The web console in real headless Chromium against a real `kalkan-server run` process.

One server (TLS on, SQLite) for the module: an agent enrolled in "Lab 1" posts a
`web.report`, a heartbeat and an ISUO session through the real ingest API, and
people use the pages like a person would — typing, clicking, reading.
Screenshots go to the `artifacts_dir` folder (test-artifacts/web-*.png).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from policy_server.db.models import Incident
from policy_server.protocol import make_event
from tests.conftest import assert_fits_width
from tests.support.server import KalkanServerProcess

PASSWORD = "browser-pass-9"
REPORTED_URL = "http://dangerous-game.example/level-50"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    with KalkanServerProcess(tmp_path_factory.mktemp("web-server")) as running:
        yield running


@pytest.fixture(scope="module")
def agent_token(server: KalkanServerProcess) -> str:
    _agent_id, token = server.enroll("pc-lab1-07", seat="07", room="Lab 1")
    return token


def post_events(server: KalkanServerProcess, token: str, *events) -> dict:
    body = {"events": [e.model_dump(mode="json") for e in events]}
    with server.agent_client(token) as agent:
        answer = agent.post("/api/v1/events", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert len(result["accepted"]) == len(events), result
    return result


def report_a_page(server: KalkanServerProcess, token: str, url: str) -> int:
    post_events(server, token, make_event("web.report", {"url": url, "comment": "a game that hurts children"},
                                          subject={"os_user": "student7", "seat": "07"}))
    with server.db() as db:
        newest_first = Incident.id.desc()
        incident = db.query(Incident).filter(Incident.rule == "web.report").order_by(newest_first).first()
        # the URL stays in the event (personal data); the incident keeps only its host
        assert incident is not None, "web.report made no incident"
        assert incident.params["host"] == url.split("/")[2]
        return incident.id


@pytest.fixture()
def page_for(browser, server):
    """page_for(language) → a fresh Chromium tab (own cookies) with that Accept-Language."""
    contexts = []

    def open_page(language: str = "ky"):
        context = browser.new_context(ignore_https_errors=True, locale=language, viewport={"width": 1024,
                                                                                             "height": 768})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    yield open_page
    for context in contexts:
        context.close()


def log_in(page, server: KalkanServerProcess, username: str, password: str = PASSWORD) -> None:
    page.goto(server.url + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form.card button[type=submit]")


def test_admin_acknowledges_and_resolves_a_reported_page(server, agent_token, page_for, artifacts_dir):
    server.create_user("admin", "aibek", PASSWORD, full_name="Aibek Asanov")
    incident_id = report_a_page(server, agent_token, REPORTED_URL)
    page = page_for("en")
    log_in(page, server, "aibek")
    page.wait_for_url("**/incidents")
    row = page.locator("tr.incident", has_text=REPORTED_URL)
    assert row.count() == 1
    assert "New" in row.inner_text() and "Lab 1 / 07" in row.inner_text()
    assert "pc-lab1-07" in row.inner_text()
    assert "student7" in row.inner_text() and "000 §8.3" in row.inner_text()
    page.screenshot(path=str(artifacts_dir / "web-incidents-admin-en.png"), full_page=True)

    row.locator("a").click()
    page.wait_for_url(f"**/incidents/{incident_id}")
    assert "a game that hurts children" in page.inner_text("table.list")  # the event's comment
    page.click("button[value=acknowledge]")
    page.wait_for_url(f"**/incidents/{incident_id}?done=acknowledged")
    assert page.inner_text("#incident-status") == "Acknowledged"
    assert "The incident is acknowledged." in page.inner_text("p.notice")

    page.fill("#reason", "Reported to the methodical council; site added to the block list")
    page.click("text=Resolve >> nth=-1")
    page.wait_for_url(f"**/incidents/{incident_id}?done=resolved")
    assert page.inner_text("#incident-status") == "Resolved"
    assert "site added to the block list" in page.inner_text("#incident-resolution")
    timeline = page.inner_text("ol.timeline")
    assert "Acknowledged — aibek" in timeline and "Resolved — aibek" in timeline
    assert page.locator("#reason").count() == 0  # no more actions on a resolved incident
    page.screenshot(path=str(artifacts_dir / "web-incident-resolved-en.png"), full_page=True)
    with server.db() as db:
        assert db.get(Incident, incident_id).status == "resolved"


@pytest.mark.parametrize(
    ("language", "heading", "status_new", "login_button"),
    [("ky", "Инциденттер", "Жаңы", "Кирүү"), ("ru", "Инциденты", "Новый", "Войти"),
     ("en", "Incidents", "New", "Log in")],
)
def test_pages_in_each_language(server, agent_token, page_for, artifacts_dir, language, heading, status_new,
                                login_button):
    username = f"admin-{language}"
    server.create_user("admin", username, PASSWORD)
    report_a_page(server, agent_token, f"http://{language}.bad.example/")
    page = page_for(language)  # the browser's own language picks the page language
    page.goto(server.url + "/login")
    assert page.get_attribute("html", "lang") == language
    assert page.inner_text("form.card button") == login_button
    page.screenshot(path=str(artifacts_dir / f"web-login-{language}.png"))
    log_in(page, server, username)
    page.wait_for_url("**/incidents")
    assert page.inner_text("h1") == heading
    assert status_new in page.inner_text("tr.incident >> nth=0")
    page.screenshot(path=str(artifacts_dir / f"web-incidents-{language}.png"), full_page=True)
    shoot_widths(page, artifacts_dir, f"web-incidents-{language}")
    page.click("nav.main-nav a[href='/workstations']")
    assert "pc-lab1-07" in page.inner_text("table.list")
    page.screenshot(path=str(artifacts_dir / f"web-workstations-{language}.png"), full_page=True)
    shoot_widths(page, artifacts_dir, f"web-workstations-{language}")


def shoot_widths(page, artifacts_dir, name: str) -> None:
    """The page at 1366×768 and 390 px too (`name-1366.png`, `name-390.png`): nothing cut off."""
    for width, height in ((1366, 768), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(artifacts_dir / f"{name}-{width}.png"), full_page=True)
        assert_fits_width(page)
    page.set_viewport_size({"width": 1024, "height": 768})


def test_language_switcher_changes_the_page_and_remembers(server, page_for):
    server.create_user("teacher", "switcher", PASSWORD)
    page = page_for("en")
    log_in(page, server, "switcher")
    page.wait_for_url("**/incidents")
    page.click("nav.languages a[lang=ru]")
    assert page.inner_text("h1") == "Инциденты"
    page.goto(server.url + "/incidents")  # no ?lang: the cookie keeps Russian
    assert page.inner_text("h1") == "Инциденты"
    page.click("nav.languages a[lang=ky]")
    assert page.inner_text("h1") == "Инциденттер"


def test_wrong_password_shows_the_reason_in_the_page_language(server, page_for):
    server.create_user("admin", "careful", PASSWORD)
    page = page_for("ru")
    log_in(page, server, "careful", "not-the-password")
    assert "Неверное имя пользователя или пароль" in page.inner_text("p.error")
    assert page.input_value("#username") == "careful"
    assert page.context.cookies() == [c for c in page.context.cookies() if c["name"] != "kalkan_session"]


def test_a_forged_cross_site_post_changes_nothing(server, agent_token, page_for, artifacts_dir):
    server.create_user("admin", "victim", PASSWORD)
    incident_id = report_a_page(server, agent_token, "http://forged.example/")
    page = page_for("en")
    log_in(page, server, "victim")
    page.wait_for_url("**/incidents")
    # 1. Same browser, the session cookie goes along, but no form token: refused.
    answer = page.request.post(f"{server.url}/incidents/{incident_id}/acknowledge", form={"action": "x"},
                               headers={"Accept-Language": "en"}, max_redirects=0)
    assert answer.status == 403
    assert "security token is missing or out of date" in answer.text()
    # 2. A hostile page elsewhere auto-submits a form at us: no token, and SameSite keeps the cookie home.
    page.set_content(
        f'<form id="f" method="post" action="{server.url}/incidents/{incident_id}/resolve">'
        '<input name="reason" value="hacked"><input name="csrf_token" value="guess"></form>'
        '<script>document.getElementById("f").submit()</script>')
    page.wait_for_load_state()
    page.screenshot(path=str(artifacts_dir / "web-forged-post.png"))
    with server.db() as db:
        incident = db.get(Incident, incident_id)
        assert incident.status == "new" and incident.resolution is None


def test_director_reads_without_user_names_and_has_no_actions(server, agent_token, page_for, artifacts_dir):
    server.create_user("director", "direktor", PASSWORD)
    incident_id = report_a_page(server, agent_token, "http://director-view.example/")
    page = page_for("ky")
    log_in(page, server, "direktor")
    page.wait_for_url("**/summaries/**")  # the director lands on the weekly summary (issue 15)
    page.goto(f"{server.url}/incidents")
    listing = page.inner_text("main")
    # no OS user names for the director (002 §3.1, docs/security.md); the reported site's
    # name is the incident's subject, not the student's
    assert "director-view.example" in listing and "student7" not in listing
    assert page.locator(f"a[href='/incidents/{incident_id}']").count() == 1
    page.goto(f"{server.url}/incidents/{incident_id}")
    assert "student7" not in page.inner_text("main")
    assert page.locator("form[action$='/resolve']").count() == 0
    page.screenshot(path=str(artifacts_dir / "web-incident-director-ky.png"), full_page=True)
    assert page.locator("nav.main-nav a[href='/isuo']").count() == 0
    answer = page.goto(f"{server.url}/isuo")
    assert answer.status == 403 and "Уруксат жок" in page.inner_text("h1")


def test_workstations_and_isuo_log_from_real_agent_events(server, agent_token, page_for, artifacts_dir):
    started = datetime.now(UTC) - timedelta(minutes=20)
    heartbeat = make_event("agent.heartbeat", {
        "agent_version": "0.1.0", "hostname": "pc-lab1-07", "policy_version": 0,
        "collectors": {"heartbeat": {"state": "ok"},
                       "usb": {"state": "failed", "detail": "cannot read /sys/bus/usb"}}})
    isuo = make_event("isuo.session", {"host": "emis.edu.gov.kg", "state": "start",
                                       "started_at": started.isoformat()},
                      subject={"os_user": "teacher-aigul", "seat": "07"}, occurred_at=started)
    post_events(server, agent_token, heartbeat, isuo)
    username = f"it-{uuid.uuid4().hex[:6]}"
    server.create_user("admin", username, PASSWORD)
    page = page_for("en")
    log_in(page, server, username)
    page.wait_for_url("**/incidents")
    page.goto(server.url + "/workstations")
    row = page.locator("tr", has_text="pc-lab1-07").inner_text()
    assert "Lab 1 / 07" in row
    assert "cannot read /sys/bus/usb" in row
    assert page.locator("li.state-failed", has_text="usb").count() == 1
    assert page.locator("li.state-ok", has_text="heartbeat").count() == 1
    page.screenshot(path=str(artifacts_dir / "web-workstations-health-en.png"), full_page=True)
    page.goto(server.url + "/isuo")
    log_row = page.locator("tr", has_text="teacher-aigul").inner_text()
    assert "emis.edu.gov.kg" in log_row and "Lab 1 / 07" in log_row
    page.screenshot(path=str(artifacts_dir / "web-isuo-en.png"), full_page=True)


@pytest.mark.parametrize("language, menu", [("ky", "Меню"), ("ru", "Меню"), ("en", "Menu")])
def test_on_a_phone_the_sections_fold_behind_one_menu_button(server, page_for, artifacts_dir, language,
                                                              menu):
    """Fifteen sections took the whole first screen of every page at 390 px: they fold behind
    "☰ Menu" there (no script: a checkbox and its label), and always show on a wider screen."""
    server.create_user("admin", f"phone-{language}", PASSWORD)
    page = page_for(language)
    log_in(page, server, f"phone-{language}")
    page.wait_for_url("**/incidents")
    assert page.is_visible("nav.main-nav a[href='/fleet']") and not page.is_visible("label.menu-button")

    page.set_viewport_size({"width": 390, "height": 844})
    heading_top = page.locator("h1").bounding_box()["y"]
    assert heading_top < 300, f"the page's heading starts {heading_top:.0f} px down on a phone"
    assert not page.is_visible("nav.main-nav") and not page.is_visible("form[action='/logout']")
    assert page.inner_text("label.menu-button").startswith(f"☰ {menu}")
    page.screenshot(path=str(artifacts_dir / f"web-menu-closed-{language}-390.png"))

    page.click("label.menu-button")
    assert page.is_visible("nav.main-nav a[href='/fleet']") and page.is_visible("form[action='/logout']")
    assert_fits_width(page)
    page.screenshot(path=str(artifacts_dir / f"web-menu-open-{language}-390.png"), full_page=True)
    page.click("nav.main-nav a[href='/fleet']")
    page.wait_for_url("**/fleet")
    assert not page.is_visible("nav.main-nav")  # a new page starts folded again
