"""The director's weekly summary in real Chromium against a real server process: shown on
login, ky/ru/en at 1366×768 and 390 px (screenshots in test-artifacts/), the PDF and CSV
links, and who may not see it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from policy_server.summaries import service
from tests.reports import chromium
from tests.reports.seed import ProcessApi, seed
from tests.support.server import KalkanServerProcess

PASSWORD = "director-pass-9"
HEADINGS = {"ky": "Жобонун аткарылышы боюнча жумалык жыйынтык",
            "ru": "Недельная сводка соблюдения регламента",
            "en": "Weekly compliance summary"}


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


@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_the_director_lands_on_the_weekly_summary(server, artifacts_dir, language):
    shots = chromium.run(server.url, "direktor", PASSWORD, [
        {"path": f"/summaries/2026-W48?lang={language}", "width": width, "height": height, "locale": language,
         "file": str(artifacts_dir / f"reports-page-{language}-{tag}.png")}
        for width, height, tag in ((1366, 768, "wide"), (390, 844, "narrow"))])
    for shot in shots:
        assert "/summaries/2026-W" in shot["landed"]  # shown on login: the last finished week
        assert shot["h1"].startswith(HEADINGS[language])
        assert "2026-W48" in shot["main"] and "4 / 5" in shot["main"]  # seats that reported
        assert shot["svgs"] >= 9  # the trend chart and a bar per control


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
