"""The server certificate's page in real Chromium against a real `kalkan-server run` (HTTPS):
prepare the next certificate, see how many seats hold it and which do not, withdraw it; then
activate anyway and read that the server must be restarted.
Screenshots in ky/ru/en at 1366×768 and 390 px: test-artifacts/console-certificate-*.png."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from policy_server.db.models import Workstation
from policy_server.tls import cert_fingerprint
from tests.console.test_console_browser import log_in, shoot
from tests.support.server import KalkanServerProcess

PASSWORD = "cert-page-9"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    with KalkanServerProcess(tmp_path_factory.mktemp("cert-page-server")) as running:
        running.create_user("admin", "rp.admin", PASSWORD, full_name="Responsible Person")
        running.enroll("pc-lab1-01", seat="lab1-01", room="Lab 1")
        running.enroll("pc-lab1-02", seat="lab1-02", room="Lab 1")
        yield running


def _seats_report(server: KalkanServerProcess, pins: dict[str, list[str]]) -> None:
    """What the seats' heartbeats store: seen now, holding these pins (`health.tls_pins`)."""
    with server.db() as db:
        for ws in db.scalars(select(Workstation)):
            ws.last_seen_at = datetime.now(UTC)
            ws.health = {**(ws.health or {}), "tls_pins": pins.get(ws.seat, [])}
        db.commit()


def test_prepare_count_and_withdraw_in_chromium(server, browser, artifacts_dir):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, server, "rp.admin", PASSWORD)
    served = server.fingerprint  # (the property reads the file: after activate, the new one)
    page.click("nav.main-nav a[href='/server-certificate']")  # linked from the console's navigation
    assert server.fingerprint in page.inner_text("main")
    assert page.is_visible("#no-next")

    page.click("#f-rotate")
    assert "done=prepared" in page.url and page.is_visible("p.notice")
    next_cert = server.cert_path.with_name("server.next.crt")
    upcoming = cert_fingerprint(next_cert)
    _seats_report(server, {"lab1-01": [server.fingerprint, upcoming], "lab1-02": [server.fingerprint]})
    page.goto(server.url + "/server-certificate?lang=en")
    assert upcoming in page.inner_text("main")
    assert "1 of 2 workstations seen in the last 14 days" in page.inner_text("#seat-count")
    rows = page.locator("#seats-waiting tbody tr")  # which do not hold it, by room and seat
    assert rows.count() == 1
    assert rows.first.locator("td").all_inner_texts()[:2] == ["Lab 1", "lab1-02"]
    shoot(page, artifacts_dir, "certificate")  # ky/ru/en × 1366 and 390 px, each fits the width

    # activating is refused while lab1-02 lacks the pin; the error summary names it
    page.goto(server.url + "/server-certificate?lang=ky")
    page.click("#f-activate")
    assert "lab1-02" in page.inner_text(".error-summary")
    assert cert_fingerprint(server.cert_path) == server.fingerprint
    shoot(page, artifacts_dir, "certificate-refused", languages=())

    page.click("#f-cancel")
    assert "done=cancelled" in page.url and page.is_visible("#no-next")
    assert not next_cert.exists()

    # prepared again and activated anyway: the page says the server must be restarted, and how
    page.click("#f-rotate")
    page.check("#f-anyway")
    page.click("#f-activate")
    assert "done=activated" in page.url
    restart = page.inner_text("#restart")
    assert "systemctl restart kalkan-server" in restart and served in restart  # still served
    page.goto(server.url + "/server-certificate")  # no ?done: the running process still serves the old one
    assert page.is_visible("#restart")
    assert page.is_visible("#restart-first") and not page.is_visible("#f-rotate")  # restart before the next
    shoot(page, artifacts_dir, "certificate-restart")
    context.close()
