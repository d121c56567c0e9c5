"""The security edges seen from a real Chromium against a real TLS server
(docs/security.md): the throttled login page in each language and width, the pages under
the Content-Security-Policy without a single violation, the error page for a role outside a
page's scope.  Screenshots: test-artifacts/security-*.png."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policy_server import protocol
from tests.support.server import KalkanServerProcess

PASSWORD = "browser-password-9"
WAIT_TEXT = {
    "ky": "Ийгиликсиз кирүү аракеттери өтө көп",
    "ru": "Слишком много неудачных попыток входа",
    "en": "Too many failed logins",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    with KalkanServerProcess(tmp_path_factory.mktemp("security-web")) as running:
        yield running


def _page(browser, language: str, width: int = 1366, height: int = 768):
    context = browser.new_context(ignore_https_errors=True, locale=language,
                                  viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(10_000)
    return context, page


def _log_in(page, server: KalkanServerProcess, username: str, password: str) -> None:
    page.goto(server.url + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form.card button[type=submit]")


@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_the_throttled_login_page_says_to_wait(server, browser, artifacts_dir, language):
    username = f"locked-{language}"
    server.create_user("teacher", username, PASSWORD)
    for width, height in ((1366, 768), (390, 844)):
        context, page = _page(browser, language, width, height)
        try:
            if width == 1366:
                for _ in range(5):
                    _log_in(page, server, username, "wrong-password")
            _log_in(page, server, username, PASSWORD)  # right, but the account must wait
            error = page.inner_text("p.error")
            assert WAIT_TEXT[language] in error, error
            assert not [c for c in page.context.cookies() if c["name"] == "kalkan_session"]
            page.screenshot(path=str(artifacts_dir / f"security-login-throttled-{language}-{width}.png"),
                            full_page=True)
        finally:
            context.close()


def test_pages_run_under_the_csp_without_violations(server, browser, artifacts_dir):
    server.create_user("admin", "csp-admin", PASSWORD)
    _agent_id, token = server.enroll("pc-csp", seat="03", room="Lab C")
    event = protocol.make_event("web.report", {"url": "http://csp.example/page", "comment": "x"},
                                subject=protocol.Subject(os_user="pupil-c", seat="03"))
    with server.agent_client(token) as agent:
        answer = agent.post("/api/v1/events", json={"events": [event.model_dump(mode="json")]})
        assert answer.status_code == 200
    context, page = _page(browser, "en")
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text or "Refused to" in m.text else None)
    try:
        _log_in(page, server, "csp-admin", PASSWORD)
        page.wait_for_url("**/incidents")
        for path in ("/incidents", "/workstations", "/isuo", "/docs"):
            answer = page.goto(server.url + path)
            assert answer.status == 200, path
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")
            assert answer.headers["strict-transport-security"].startswith("max-age=")
        page.goto(server.url + "/incidents")
        page.locator("tr.incident a").first.click()
        assert "http://csp.example/page" in page.inner_text("main")  # the admin's view adds the URL
        # the stylesheet was applied (a CSP refusing it would leave the default layout)
        assert page.evaluate("getComputedStyle(document.body).fontFamily") != "\"Times New Roman\""
        page.screenshot(path=str(artifacts_dir / "security-incident-admin-en.png"), full_page=True)
    finally:
        context.close()
    assert violations == []


def test_a_role_outside_a_pages_scope_gets_the_error_page(server, browser, artifacts_dir):
    server.create_user("director", "scope-director", PASSWORD)
    context, page = _page(browser, "ru")
    try:
        _log_in(page, server, "scope-director", PASSWORD)
        page.wait_for_url("**/incidents")
        answer = page.goto(server.url + "/isuo")
        assert answer.status == 403
        assert "Ваша роль не позволяет видеть или делать это" in page.inner_text("main")
        page.screenshot(path=str(artifacts_dir / "security-not-allowed-ru.png"), full_page=True)
        anonymous, other = _page(browser, "ru")
        try:
            answer = other.goto(server.url + "/workstations")
            assert other.url.startswith(server.url + "/login?next=")
        finally:
            anonymous.close()
    finally:
        context.close()
