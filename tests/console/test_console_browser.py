"""The responsible person's console in real Chromium against a real `kalkan-server run`, with
real agents (`kalkan-agent enroll` with the command the page printed, `kalkan-agent run`) and a
real clamd (issue 11).  Screenshots of every step at 1366×768 and 390 px, the pages a person
reads again in ky/ru/en: test-artifacts/console-*.png.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.conftest import assert_fits_width
from tests.support.agent_process import REPO, AgentProcess
from tests.support.clamd import ClamdProcess
from tests.support.server import KalkanServerProcess

PASSWORD = "console-pass-9"
WIDTHS = ((1366, 768), (390, 844))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    with KalkanServerProcess(tmp_path_factory.mktemp("console-server")) as running:
        running.create_user("admin", "rp.admin", PASSWORD, full_name="Responsible Person")
        running.enroll("pc-lab1-01", seat="lab1-01", room="Lab 1")  # the first workstation
        yield running


def shoot(page, artifacts_dir, name: str, *, languages=("ky", "ru", "en")) -> None:
    """Screenshots of the page as it is now in each language (GET pages) and width."""
    url = page.url.split("?")[0] if languages else None
    query = page.url.split("?")[1] if "?" in page.url else ""
    query = "&".join(p for p in query.split("&") if p and not p.startswith("lang="))
    for language in languages or ("",):
        if url:
            page.goto(f"{url}?{query + '&' if query else ''}lang={language}")
        for width, height in WIDTHS:
            page.set_viewport_size({"width": width, "height": height})
            suffix = f"-{language}" if language else ""
            page.screenshot(path=str(artifacts_dir / f"console-{name}{suffix}-{width}.png"), full_page=True)
            assert_fits_width(page)
    page.set_viewport_size({"width": 1366, "height": 768})


def log_in(page, server, username: str, password: str) -> None:
    page.goto(server.url + "/login?lang=en")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form.card button[type=submit]")


def reload_until(page, predicate, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        page.reload()
        if predicate(page.content()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the page never showed it within {timeout}s:\n{page.inner_text('main')[:3000]}"
            )
        time.sleep(0.25)  # the agent beats every second: poll a little faster than it


def test_responsible_person_console(server, browser, artifacts_dir, tmp_path, monkeypatch):
    context = browser.new_context(
        ignore_https_errors=True, locale="en", viewport={"width": 1366, "height": 768}
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, server, "rp.admin", PASSWORD)

    # 1. add a teacher (class teacher of 7-A): the temporary password is printed once
    page.goto(server.url + "/people/new?lang=en")
    page.fill("#f-username", "a.asanova")
    page.fill("#f-full_name", "Aida Asanova")
    page.fill("#f-classes", "7-A, 8-B")
    page.fill("#f-class_teacher_of", "7-A")
    shoot(page, artifacts_dir, "person-new")
    # a mistake: the GOV.UK error summary links to the field, the input is kept
    page.fill("#f-username", "Aida Asanova!")
    page.fill("#f-classes", "7-A, <b>")
    page.click("form.card button[type=submit]")
    summary = page.inner_text(".error-summary")
    assert "Aida Asanova!" in summary and "<b>" in summary
    assert page.input_value("#f-username") == "Aida Asanova!"
    shoot(page, artifacts_dir, "person-errors", languages=())
    page.fill("#f-username", "a.asanova")
    page.fill("#f-full_name", "Aida Asanova")
    page.fill("#f-classes", "7-A, 8-B")
    page.fill("#f-class_teacher_of", "7-A")
    page.click("form.card button[type=submit]")
    temporary = page.inner_text("#temporary-password").strip()
    assert re.fullmatch(r"[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}", temporary)
    shoot(page, artifacts_dir, "person-created", languages=())
    page.goto(server.url + "/people?lang=en")
    assert "a.asanova" in page.inner_text("main") and "Class teacher" in page.inner_text("main")
    shoot(page, artifacts_dir, "people")

    # 2. a room with a 2 × 2 layout and an enrolment code for one seat
    page.goto(server.url + "/rooms?lang=en")
    page.fill("#f-name", "Lab 2")
    page.fill("#f-rows-input", "2")
    page.fill("input[name=columns]", "2")
    page.click("form[action='/rooms'] button[type=submit]")
    assert "lab2-04" in page.inner_text("main")
    page.click("form[action$='/codes'] button[type=submit]")
    command = page.inner_text("#command-lab2-01").strip()
    assert command.startswith("sudo kalkan-agent enroll --server https://") and "--fingerprint" in command
    assert server.fingerprint in command
    shoot(page, artifacts_dir, "enrolment-code", languages=())
    page.goto(server.url + "/rooms?lang=en")
    shoot(page, artifacts_dir, "rooms")

    # 3. enrol a second workstation with exactly the printed command (as root → our python)
    words = shlex.split(command)
    assert words[:3] == ["sudo", "kalkan-agent", "enroll"]
    agent = AgentProcess(tmp_path / "agent-2")
    enrolled = subprocess.run(
        [*agent._cli(*words[2:]), "--state-dir", str(agent.state_dir)],
        cwd=REPO,
        env=agent._env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    clamd = ClamdProcess(tmp_path / "clamd")  # configured, not started: the antivirus fails first
    monkeypatch.setenv("KALKAN_CLAMD_SOCKET", str(clamd.socket_path))
    with agent.start(collectors=["heartbeat", "antivirus"], heartbeat_s=1):
        page.goto(server.url + "/fleet?lang=en")
        reload_until(page, lambda html: "lab2-01" in html and "The antivirus service (clamd)" in html)
        assert "passes on 0 of 2 seats" in page.inner_text("#control-antivirus")
        shoot(page, artifacts_dir, "fleet-antivirus-failing")

        # 4. clamd starts; the weekly full scan's proof arrives → the antivirus passes on that seat
        clamd.start()
        try:
            agent.emit(
                "av.scan.completed",
                {
                    "scan_id": "week-49",
                    "kind": "full",
                    "files": 1200,
                    "bytes": 10**8,
                    "threats": 0,
                    "duration_s": 95.0,
                    "started_at": datetime.now(UTC).isoformat(),
                },
            )
            reload_until(
                page,
                lambda html: (
                    "passes on 1 of 2 seats" in html.split('id="control-antivirus"')[1].split("</tr>")[0]
                ),
            )
            shoot(page, artifacts_dir, "fleet-antivirus-passing")
            page.click("text=lab2-01")
            assert "proof event" in page.inner_text("main")
            shoot(page, artifacts_dir, "seat")
            page.click("text=proof event")
            assert "/fleet/events/" in page.url
            shoot(page, artifacts_dir, "event")
        finally:
            clamd.stop()

        # 5. a blocked USB model and a package update's integrity changes (fake hardware: the
        #    events come from the agent's outbox as its collectors would write them)
        agent.emit(
            "usb.blocked",
            {
                "device": {
                    "vendor_id": "0781",
                    "product_id": "5567",
                    "serial": "4C53010",
                    "manufacturer": "SanDisk",
                    "product": "Cruzer Blade",
                    "kinds": ["storage"],
                },
                "reason": "storage not allowed",
            },
        )
        for name in ("ls", "cp", "mv"):
            agent.emit(
                "integrity.changed",
                {
                    "path": f"/usr/bin/{name}",
                    "change": "modified",
                    "package": "coreutils",
                    "by_package_manager": True,
                    "new_sha256": "ab" * 32,
                },
            )
        page.goto(server.url + "/approvals?lang=en")
        reload_until(page, lambda html: "Cruzer Blade" in html and "coreutils" in html)
        shoot(page, artifacts_dir, "approvals")
        page.goto(server.url + "/approvals?lang=en")
        page.click("#usb-0781-5567 button[value=model]")
        assert "This model is allowed" in page.inner_text("main")
        assert "Cruzer Blade" not in page.inner_text("main")
        page.click("#package-coreutils button[type=submit]")
        assert "accepted as authorised" in page.inner_text("main")
        assert "coreutils" not in page.inner_text("main")
        shoot(page, artifacts_dir, "approvals-done", languages=())
    with server.db() as db:
        from policy_server.policies.service import current_bundle

        bundle = current_bundle(db)
        assert any(a.vendor_id == "0781" and a.serial is None for a in bundle.usb.allow)
        assert {"/usr/bin/ls", "/usr/bin/cp", "/usr/bin/mv"} <= {a.path for a in bundle.integrity.accepted}

    # 6. reset the teacher's password; she logs in with it and must choose her own
    page.goto(server.url + "/people?lang=en")
    page.click("text=a.asanova")
    shoot(page, artifacts_dir, "person")
    page.click("form[action$='/reset-password'] button")
    second = page.inner_text("#temporary-password").strip()
    assert second != temporary
    shoot(page, artifacts_dir, "password-reset", languages=())
    teacher_context = browser.new_context(ignore_https_errors=True, locale="ky")
    teacher = teacher_context.new_page()
    log_in(teacher, server, "a.asanova", temporary)
    assert "/login" in teacher.url  # the first temporary password no longer works
    log_in(teacher, server, "a.asanova", second)
    assert "/account/password" in teacher.url
    shoot(teacher, artifacts_dir, "change-password")
    teacher.fill("#f-current", second)
    teacher.fill("#f-new", "aida-own-pass-7")
    teacher.fill("#f-repeat", "aida-own-pass-7")
    teacher.click("form.card button[type=submit]")
    assert "/incidents" in teacher.url
    teacher_context.close()

    # 7. everything is in the audit log
    page.goto(server.url + "/audit?lang=en")
    log_text = page.inner_text("main")
    for action in ("person.create", "person.reset_password", "enrollment_code.create", "policy"):
        assert action in log_text
    shoot(page, artifacts_dir, "audit")
    context.close()
