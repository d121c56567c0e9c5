"""Two school servers and one district server (real processes; the district on PostgreSQL):
the schools enrol at the district with a code, send their kept weeks signed, the district page
shows both with suppression applied; a school whose district was away for a day catches up
without duplicates."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from policy_server.summaries import service as summaries
from tests.reports.seed import ProcessApi, seed
from tests.support.postgres import postgres_cluster  # noqa: F401  (fixture)
from tests.support.server import REPO, KalkanServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
PASSWORD = "district-pass-9"


class DistrictServer(KalkanServerProcess):
    def _command(self) -> list[str]:
        return [*super()._command(), "--level", "district"]


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, postgres_cluster) -> Iterator[tuple]:  # noqa: F811
    mp = pytest.MonkeyPatch()
    mp.setenv("KALKAN_SUMMARIES_INTERVAL_S", "0")  # the test sends by hand (`kalkan-report send`)
    district_db = postgres_cluster.create_database()
    district = DistrictServer(tmp_path_factory.mktemp("district"), db_url=district_db)
    schools = [KalkanServerProcess(tmp_path_factory.mktemp(f"school-{n}")) for n in "ab"]
    try:
        district.start()
        for s in schools:
            s.start()
        yield district, district_db, schools
    finally:
        for s in (district, *schools):
            s.stop()
        mp.undo()


def _make_weeks(school: KalkanServerProcess) -> None:
    seed(ProcessApi(school))
    with school.db() as db:
        for week, day in ((47, 23), (48, 30)):
            summaries.make_weekly(db, 2026, week, now=datetime(2026, 11, day, 3, tzinfo=UTC))
        db.commit()


def _enrol(district, district_db, school, name: str) -> None:
    added = report("add-school", "--db", district_db, "--name", name)
    assert added.returncode == 0, added.stderr
    code = re.search(r"enrolment code (\S+)", added.stdout)[1]
    enrolled = report("district-enroll", "--state-dir", str(school.state_dir), "--url", district.url,
                      "--code", code, "--fingerprint", district.fingerprint)
    assert enrolled.returncode == 0, enrolled.stderr + enrolled.stdout


def _rows(district_db: str) -> list[tuple]:
    engine = create_engine(district_db.replace("postgresql+psycopg", "postgresql+psycopg"))
    with engine.connect() as c:
        rows = c.execute(text("SELECT s.name, w.period FROM district_weeks w JOIN district_schools s "
                              "ON s.id = w.school_id ORDER BY 1, 2")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def _shoot(browser, base: str, username: str, password: str, language: str, file) -> dict:
    """Log in through the form in a fresh context (the shared module-scoped Chromium of
    tests/conftest.py), open the district page in `language`, screenshot it at 1366×768."""
    context = browser.new_context(ignore_https_errors=True, locale=language,
                                  viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(base + "/login")
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("form.card button[type=submit]")
        page.wait_for_load_state()
        landed = page.url
        page.goto(f"{base}/district?lang={language}")
        page.screenshot(path=str(file), full_page=True)
        return {"landed": landed, "main": page.locator("main").inner_text()}
    finally:
        context.close()


def test_two_schools_send_their_weeks_and_the_district_sees_both_suppressed(servers, browser, artifacts_dir):
    district, district_db, (a, b) = servers
    for school, name in ((a, "School A"), (b, "School B")):
        _make_weeks(school)
        _enrol(district, district_db, school, name)

    sent = report("send", "--state-dir", str(a.state_dir))
    assert sent.returncode == 0, sent.stderr
    assert "2026-W47: accepted" in sent.stdout and "2026-W48: accepted" in sent.stdout

    # The district is away (a day): school B's send fails, is kept, and is retried later.
    district.stop()
    away = report("send", "--state-dir", str(b.state_dir))
    assert away.returncode == 1 and "2026-W47: unreachable" in away.stdout
    with b.db() as db:
        pending = db.execute(text("SELECT period, send_attempts, send_error FROM weekly_reports "
                                  "WHERE sent_at IS NULL ORDER BY period")).all()
        assert [p for p, _n, _e in pending] == ["2026-W47", "2026-W48"]
        assert all("unreachable" in (e or "") for _p, _n, e in pending)
    district.start()
    caught_up = report("send", "--state-dir", str(b.state_dir))
    assert caught_up.returncode == 0 and caught_up.stdout.count("accepted") == 2, caught_up.stdout
    assert "nothing to send" in report("send", "--state-dir", str(b.state_dir)).stdout
    # Sending a week again (a lost answer, a restored backup) is answered "duplicate", never stored twice.
    with b.db() as db:
        db.execute(text("UPDATE weekly_reports SET sent_at = NULL"))
        db.commit()
    again = report("send", "--state-dir", str(b.state_dir))
    assert again.stdout.count("duplicate") == 2, again.stdout
    assert _rows(district_db) == [("School A", "2026-W47"), ("School A", "2026-W48"),
                                  ("School B", "2026-W47"), ("School B", "2026-W48")]

    district.create_user("district", "rayon", PASSWORD)
    with district.login("rayon", PASSWORD) as client:
        page = client.get("/district?lang=en")
    assert page.status_code == 200, page.text
    html = page.text
    assert "School A" in html and "School B" in html and "2026-W48" in html
    assert "&lt; 10" in html  # each school's 5 incidents (1 high + 4 medium) are below the threshold
    assert 'hidden: fewer than 3 schools' in html  # 2 schools: no district total
    assert "pc-0" not in html and "Lab 1" not in html  # no seat, no room reaches the district
    shots = [_shoot(browser, district.url, "rayon", PASSWORD, language,
                    artifacts_dir / f"reports-district-{language}.png") for language in ("ky", "ru", "en")]
    assert all(shot["landed"].endswith("/district") for shot in shots)  # the district lands on its page
    assert "School A" in shots[0]["main"] and "< 10" in shots[2]["main"]
