"""The ISUO pages in real headless Chromium against a real `kalkan-server run` process.

The responsible person registers a person with an uploaded obligation scan, opens the
annex 1.1 print form, imports an export with a column mapping and sees the findings; the
director signs the termly review.  Screenshots in ky/ru/en at 1366×768 and 390 px wide go
to test-artifacts/isuo-*.png."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policy_server.isuo.models import IsuoReview, IsuoUser
from tests.conftest import assert_fits_width
from tests.support.server import KalkanServerProcess

PASSWORD = "browser-isuo-9"
SCAN = b"%PDF-1.4\n% signed obligation scan\n"
EXPORT = (
    "User;When;What;Address;Kind\n"
    "ghost.login;10.11.2026 10:00;login;10.35.1.7;session\n"
    "a.asanova;10.11.2026 22:00;login;10.35.1.7;session\n"
)
WIDTHS = {"wide": {"width": 1366, "height": 768}, "narrow": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    with KalkanServerProcess(tmp_path_factory.mktemp("isuo-server")) as running:
        running.create_user("admin", "resp", PASSWORD, full_name="Aibek Asanov")
        running.create_user("director", "dir", PASSWORD, full_name="Director Dinara")
        yield running


def open_page(browser, language: str, size: str = "wide"):
    context = browser.new_context(ignore_https_errors=True, locale=language, viewport=WIDTHS[size])
    page = context.new_page()
    page.set_default_timeout(10_000)
    return context, page


def log_in(page, server, username: str, language: str) -> None:
    page.goto(server.url + f"/login?lang={language}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)  # each role lands on its own home page


def shoot(page, artifacts_dir, name: str, language: str) -> None:
    for size, viewport in WIDTHS.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=str(artifacts_dir / f"isuo-{name}-{language}-{size}.png"), full_page=True)
        assert_fits_width(page)


def test_register_print_import_and_findings(server, browser, artifacts_dir, tmp_path):
    context, page = open_page(browser, "en")
    try:
        log_in(page, server, "resp", "en")
        page.goto(server.url + "/isuo/register/new?lang=en")
        page.fill("#full_name", "Asanova Aigul")
        page.fill("#position", "ISUO specialist")
        page.select_option("#isuo_role", "specialist")
        page.fill("#logins", "a.asanova")
        page.fill("#order_number", "12-k")
        page.click("form.card button[type=submit]")
        page.wait_for_url("**/isuo/people/*")
        assert "No signed obligation" in page.inner_text("#obligation-state")
        scan = tmp_path / "obligation.pdf"
        scan.write_bytes(SCAN)
        page.fill("#signed_on", "2026-09-02")
        page.fill("#instructed_by", "Director Dinara")
        page.set_input_files("#scan", str(scan))
        page.click("#obligation-form button[type=submit]")
        page.wait_for_url("**done=obligation")
        assert "Obligation signed" in page.inner_text("#obligation-state")
        assert "unchanged" in page.inner_text("#scan")
        person_url = page.url.split("?")[0]
        page.click("#annex-1-1-ru")
        page.wait_for_url("**/annex/1.1/ru")
        assert page.inner_text("#fill-name") == "Asanova Aigul"
        assert "ОБЯЗАТЕЛЬСТВО" in page.inner_text("h1")
        page.emulate_media(media="print")
        page.screenshot(path=str(artifacts_dir / "isuo-annex-1.1-ru-print.png"), full_page=True)
        page.emulate_media(media="screen")
        page.goto(person_url + "/annex/1.1/ky")
        assert "МИЛДЕТТЕНМЕСИ" in page.inner_text("h1")
        page.screenshot(path=str(artifacts_dir / "isuo-annex-1.1-ky.png"), full_page=True)

        page.goto(server.url + "/isuo/settings?lang=en")  # the address plan: 10.35.1.7 is seat 07
        page.fill("#ip", "10.35.1.7")
        page.fill("#seat", "07")
        page.click("form[action='/isuo/settings/address'] button")
        page.wait_for_url("**done=saved")
        page.goto(server.url + "/isuo/imports?lang=en")
        page.fill("#source_name", "ISUO web export")
        for field, column in {
            "login": "User",
            "time": "When",
            "action": "What",
            "ip": "Address",
            "record_type": "Kind",
        }.items():
            page.fill(f"#map_{field}", column)
        export = tmp_path / "isuo.csv"
        export.write_text(EXPORT)
        page.set_input_files("#file", str(export))
        page.click("#import-form button[type=submit]")
        page.wait_for_url("**done=imported")
        assert "2 new" in page.inner_text("#import-result")
        page.click("text=See the findings")
        page.wait_for_url("**/incidents")
        text = page.inner_text("main")
        assert "ghost.login" in text and "002 §4.4" in text and "outside working time" in text
        for language, words in (
            ("ky", "ИСУО реестринде жок"),
            ("ru", "нет в реестре ИСУО"),
            ("en", "not in the ISUO"),
        ):
            page.goto(server.url + f"/incidents?lang={language}")
            assert words in page.inner_text("main")  # the finding's title in the reader's language
            shoot(page, artifacts_dir, "findings", language)
        page.goto(server.url + "/isuo/log?lang=en")
        assert "not in the register" in page.inner_text("#access-log")
        for language in ("ky", "ru", "en"):
            for name, url in (
                ("register", "/isuo/register"),
                ("person", person_url[len(server.url) :]),
                ("person-form", person_url[len(server.url) :] + "/edit"),
                ("imports", "/isuo/imports"),
                ("log", "/isuo/log"),
                ("settings", "/isuo/settings"),
            ):
                page.goto(server.url + f"{url}?lang={language}")
                shoot(page, artifacts_dir, name, language)
    finally:
        context.close()
    with server.db() as db:
        user = db.query(IsuoUser).one()
        assert user.obligation_scan_sha256 is not None and user.obligation_scan_name == "obligation.pdf"


def test_director_signs_the_termly_review(server, browser, artifacts_dir):
    context, page = open_page(browser, "ru")
    try:
        log_in(page, server, "dir", "ru")
        page.goto(server.url + "/isuo/review?lang=ru")
        page.fill("#term", "2026-2027 / 2")
        page.click("#start-form button[type=submit]")
        page.wait_for_url("**done=started")
        assert page.locator("tr.review-item").count() >= 1
        for language in ("ky", "ru", "en"):
            page.goto(server.url + f"/isuo/review?lang={language}")
            shoot(page, artifacts_dir, "review-open", language)
        page.goto(server.url + "/isuo/review?lang=en")
        while page.locator("tr.review-item button[value=confirm]").count():
            rows = page.locator("tr.review-item")
            undecided = [i for i in range(rows.count()) if "Confirmed" not in rows.nth(i).inner_text()]
            if not undecided:
                break
            rows.nth(undecided[0]).locator("button[value=confirm]").click()
            page.wait_for_url("**done=decided")
        page.fill("#signer_name", "Director Dinara")
        page.fill("#next_due_on", "2027-03-20")
        page.click("#sign-form button[type=submit]")
        page.wait_for_url("**done=signed")
        assert "Director Dinara" in page.inner_text("#last-signed")
        assert "2027-03-20" in page.inner_text("#review-due")
        for language in ("ky", "ru", "en"):
            page.goto(server.url + f"/isuo/review?lang={language}")
            shoot(page, artifacts_dir, "review-signed", language)
            page.goto(server.url + f"/isuo/register?lang={language}")
            shoot(page, artifacts_dir, "register-director", language)
        assert page.locator("text=Add a person").count() == 0
    finally:
        context.close()
    with server.db() as db:
        review = db.query(IsuoReview).one()
        assert review.signer_name == "Director Dinara" and review.signed_at is not None
