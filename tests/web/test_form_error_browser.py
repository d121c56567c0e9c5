"""The console's error page for a refused form value, in a real Chromium (ky/ru/en, 1366×768
and 390 px wide): a form posted with a letter where a number goes answers the GOV.UK-style
summary naming the field and the fix.  Screenshots: test-artifacts/form-error-*.png."""

from __future__ import annotations

import pytest

from tests.support.server import KalkanServerProcess

PASSWORD = "form-error-browser-1"
EXPECTED = {
    "ky": "Окуянын номери: бүтүн сан жазыңыз, мисалы 12.",
    "ru": "Номер инцидента: введите целое число, например 12.",
    "en": "Incident number: enter a whole number, e.g. 12.",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with KalkanServerProcess(tmp_path_factory.mktemp("form-error-browser"), tls=False) as running:
        running.create_user("admin", "browser-admin", PASSWORD)
        yield running


@pytest.mark.parametrize("width, height", [(1366, 768), (390, 844)])
@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_a_bad_form_value_shows_the_error_page(server, browser, artifacts_dir, language, width, height):
    context = browser.new_context(locale=language, viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/login?lang={language}")
        page.fill("input[name=username]", "browser-admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/incidents**")
        # a real form post from the page, with its CSRF token, to an address with a letter for a number
        page.evaluate("""() => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = '/incidents/abc/acknowledge';
            const token = document.querySelector('input[name=csrf_token]');
            const field = document.createElement('input');
            field.name = 'csrf_token'; field.value = token ? token.value : '';
            form.appendChild(field);
            document.body.appendChild(form);
            form.submit();
        }""")
        page.wait_for_selector(".error-summary")
        assert EXPECTED[language] in page.inner_text(".error-summary")
        page.screenshot(path=str(artifacts_dir / f"form-error-{language}-{width}.png"), full_page=True)
    finally:
        context.close()
