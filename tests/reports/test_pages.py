"""The director's weekly summary in real Chromium against a real server process: shown on
login, ky/ru/en at 1366×768 and 390 px (screenshots in test-artifacts/), the PDF and CSV
links, and who may not see it.  Chromium: the shared `browser` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from policy_server.summaries import service
from tests.conftest import assert_fits_width
from tests.reports.builders import district_week, enrol_school, send_week
from tests.reports.seed import ProcessApi, seed
from tests.support.server import KalkanServerProcess

PASSWORD = "director-pass-9"
HEADINGS = {"ky": "Жобонун аткарылышы боюнча жумалык жыйынтык",
            "ru": "Недельная сводка соблюдения регламента",
            "en": "Weekly compliance summary"}
DISTRICT_HEADINGS = {"ky": "Район: мектептер катар", "ru": "Район: школы рядом",
                     "en": "District: schools side by side"}
DISTRICT_WEEKS = {"School No. 5": (82, 3, 40), "School No. 12": (91, 12, 7), "Lyceum No. 35": (70, 20, 50)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    mp = pytest.MonkeyPatch()
    mp.setenv("KALKAN_SUMMARIES_INTERVAL_S", "0")  # W48 stays unkept (the Monday job is tested apart)
    with KalkanServerProcess(tmp_path_factory.mktemp("reports-server")) as running:
        seed(ProcessApi(running))
        with running.db() as db:
            service.make_weekly(db, 2026, 47, now=datetime(2026, 11, 23, 3, tzinfo=UTC))
            db.commit()
        running.create_user("director", "direktor", PASSWORD)
        running.create_user("teacher", "mugalim", PASSWORD)
        yield running
    mp.undo()


def logged_in(browser, server, username: str):
    """A page of a fresh context (its own cookies) logged in as `username`: (context, page)."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server.url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_load_state()
    return context, page


@pytest.fixture(scope="module")
def director(server, browser):
    """The director logged in once in the module's Chromium: (page, the URL the login landed on)."""
    context, page = logged_in(browser, server, "direktor")
    yield page, page.url
    context.close()


@pytest.fixture(scope="module")
def district(server, browser):
    """A district viewer logged in once; three schools have sent their weeks W47 and W48."""
    with server.db() as db:
        for name, (score, incidents, blocked) in DISTRICT_WEEKS.items():
            school_id, key = enrol_school(db, name)
            for period in ("2026-W47", "2026-W48"):
                send_week(db, school_id, key, period, district_week(score, incidents, blocked, period))
        db.commit()
    server.create_user("district", "rayon", PASSWORD)
    context, page = logged_in(browser, server, "rayon")
    yield page
    context.close()


@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_the_director_lands_on_the_weekly_summary(server, director, artifacts_dir, language):
    page, landed = director
    assert "/summaries/2026-W" in landed  # shown on login: the last finished week
    for width, height, tag in ((1366, 768, "wide"), (390, 844, "narrow")):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(server.url + f"/summaries/2026-W48?lang={language}")
        page.screenshot(path=str(artifacts_dir / f"reports-page-{language}-{tag}.png"), full_page=True)
        assert_fits_width(page)
        assert page.locator("h1").first.inner_text().startswith(HEADINGS[language])
        main = page.locator("main").inner_text()
        assert "2026-W48" in main and "4 / 5" in main  # seats that reported
        assert ("CSV: controls" in main) == (language == "en")  # the links in the reader's language
        assert page.locator("svg").count() >= 9  # the trend chart and a bar per control


def test_the_page_is_small_and_links_pdf_and_csv(server):
    with server.login("direktor", PASSWORD) as client:
        page = client.get("/summaries/2026-W48?lang=en")
        assert page.status_code == 200 and len(page.content) < 100_000
        assert "not kept yet" in page.text  # W48 is computed live; W47 is kept
        kept = client.get("/summaries/2026-W47?lang=en")
        assert "not kept yet" not in kept.text and "/summaries/2026-W47" in kept.text
        pdf = client.get("/summaries/2026-W48/summary.pdf?lang=ky")
        assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
        csv = client.get("/summaries/2026-W48/controls.csv")
        assert csv.status_code == 200 and "av_full_scan,000 §5.4,3,5,0.600" in csv.text
        assert client.get("/summaries/2026-W48/nonsense.csv").status_code == 404
        assert client.get("/summaries/2026-W99").status_code == 404


def test_a_teacher_may_not_see_the_summary(server):
    with server.login("mugalim", PASSWORD) as client:
        assert client.get("/summaries/2026-W48", follow_redirects=False).status_code in (401, 403)


@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_the_district_page_in_each_language_and_width(server, district, artifacts_dir, language):
    page = district
    for width, height, tag in ((1366, 768, "wide"), (390, 844, "narrow")):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(server.url + f"/district?period=2026-W48&lang={language}")
        shot = artifacts_dir / f"reports-district-page-{language}-{tag}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert_fits_width(page)
        main = page.locator("main").inner_text()
        assert DISTRICT_HEADINGS[language] in page.locator("h1").inner_text()
        assert "Lyceum No. 35" in main and "2026-W48" in main
        assert "< 10" in main  # School No. 12's 7 blocked attempts and 3 incidents of No. 5: hidden
        assert page.locator("abbr", has_text="< 10").count() >= 2
