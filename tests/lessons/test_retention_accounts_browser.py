"""An old resolved incident and an old class-list audit record past the retention days, in real
Chromium against a real server process: `kalkan-server retention --apply` (a real process,
the server running) takes the student's OS account out (001 §2.15); the incident page keeps
the rule, seat, counts and resolution, names no account and says why in the "User" row and
the timeline; the audit page says the account was removed — in ky/ru/en at 1366×768 and
390 px (screenshots in test-artifacts/)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from policy_server.db.models import utcnow
from tests.conftest import REPO, assert_fits_width
from tests.support.server import KalkanServerProcess

ADMIN = ("boss", "a-long-admin-password")
ACCOUNT = "asan.u"
USER_REMOVED = {"ky": "эсеп 90 күн сакталгандан кийин алынып салынды (001 §2.15)",
                "ru": "учётная запись удалена после 90 дн. хранения (001 §2.15)",
                "en": "account removed after 90 days (001 §2.15)"}
ACCOUNT_REMOVED = {"ky": "окуучунун компьютердеги эсеби алынып салынды (001 §2.15)",
                   "ru": "учётная запись ученика на компьютере убрана (001 §2.15)",
                   "en": "student's computer account removed (001 §2.15)"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with KalkanServerProcess(tmp_path_factory.mktemp("retention-accounts"), tls=False) as running:
        running.create_user("admin", *ADMIN, full_name="Бактыгүл Осмонова")
        agent_id, _token = running.enroll("pc-01", seat="s1", room="Lab 1")
        from policy_server.db.models import AuditRecord, Incident, TimelineEntry
        from policy_server.rules import pseudonym

        old = utcnow() - timedelta(days=120)
        with running.db() as db:
            incident = Incident(
                rule="net.bypass", title="Filter bypass attempt (tunnel) on s1", severity="medium",
                params={"kind": "tunnel", "dst_ip": "203.0.113.9", "dst_port": 22, "seat": "s1"},
                clauses=["001 §2.7"], dedup_key=f"net.bypass:{agent_id}:{pseudonym(ACCOUNT)}:tunnel",
                status="resolved", agent_id=agent_id, seat="s1", os_user=ACCOUNT, first_seen_at=old,
                last_seen_at=old, window_ends_at=old, event_count=3,
                resolution=f"Talked to {ACCOUNT}; the VPN app is removed.", created_at=old)
            db.add(incident)
            db.flush()
            db.add_all([
                TimelineEntry(incident_id=incident.id, actor="system", action="opened", at=old,
                              detail={"rule": "net.bypass", "count": 3}),
                TimelineEntry(incident_id=incident.id, actor=ADMIN[0], action="resolved", at=old,
                              detail={"reason": incident.resolution}),
                AuditRecord(actor=ADMIN[0], action="timetable.student_account", target="class:1", at=old,
                            detail={"os_user": ACCOUNT})])
            db.commit()
            running.incident_id = incident.id
        yield running


def test_an_old_resolved_incident_and_class_list_audit_name_no_account_after_retention(
        server, browser, artifacts_dir):
    done = subprocess.run([sys.executable, "-m", "policy_server.cli", "retention", "--apply",
                           "--state-dir", str(server.state_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resolved incidents losing the student's computer account (the incident stays): 1" in done.stdout
    assert "linked to a class losing the account (the records stay): 1" in done.stdout, done.stdout
    context = browser.new_context(locale="en", viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(server.url + "/login?lang=en")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("form.card button[type=submit]")
    for lang in ("ky", "ru", "en"):
        for width, height in ((1366, 768), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            response = page.goto(f"{server.url}/incidents/{server.incident_id}?lang={lang}")
            assert response.status == 200
            main = page.inner_text("main")
            assert USER_REMOVED[lang] in main and "the VPN app is removed" in main, (lang, main)
            assert ACCOUNT not in main and "s1" in main
            page.screenshot(path=str(artifacts_dir / f"incident-retention-{lang}-{width}.png"),
                            full_page=True)
            assert_fits_width(page)
            page.goto(f"{server.url}/incidents?status=resolved&lang={lang}")  # the list says it too
            main = page.inner_text("main")
            assert USER_REMOVED[lang] in main and ACCOUNT not in main, (lang, main)
            page.screenshot(path=str(artifacts_dir / f"incidents-retention-{lang}-{width}.png"),
                            full_page=True)
            assert_fits_width(page)
            page.goto(f"{server.url}/audit?what=timetable.student_account&lang={lang}")
            main = page.inner_text("main")
            assert ACCOUNT_REMOVED[lang] in main and ACCOUNT not in main, (lang, main)
            page.screenshot(path=str(artifacts_dir / f"audit-account-retention-{lang}-{width}.png"),
                            full_page=True)
            assert_fits_width(page)
    context.close()
