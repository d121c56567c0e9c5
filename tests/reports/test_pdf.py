"""The PDF of the golden week in ky, ru and en: turned into PNG pages with pdftoppm (kept in
test-artifacts/), the summary on exactly one A4 page, fonts embedded, every glyph present."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from policy_server.summaries import render
from policy_server.web.i18n import translate

GOLDEN = Path(__file__).parent / "golden" / "2026-W48.json"
# Words that must come out of page 1 exactly as written (Kyrgyz ң ө ү, Cyrillic, Latin).
MUST_READ = {
    "ky": ["Аракетсиздикте бөгөттөө иштейт", "Өткөн жумага караганда начар", "Инциденттер",
           "Директор окуп, текшерди (002 §4.5)", "Текшерүүлөр жана ар бири канча орунда өтөт"],
    "ru": ["Блокировка при бездействии работает", "Хуже, чем на прошлой неделе", "Подпись"],
    "en": ["Idle lock working", "Worse than last week", "Signature"],
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install poppler-utils (install/apt-packages.txt)")
    return path


@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_the_pdf_prints_the_summary_on_one_page_with_every_glyph(language, artifacts_dir, tmp_path):
    summary = json.loads(GOLDEN.read_text())
    pdf = tmp_path / f"summary-{language}.pdf"
    pdf.write_bytes(render.pdf(summary, language))

    info = subprocess.run([_tool("pdfinfo"), str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+595\.\d* x 841\.\d* pts \(A4\)", info), info
    pages = int(re.search(r"Pages:\s+(\d+)", info)[1])
    assert pages == 2, "the summary is one page and the appendix starts on the next"

    prefix = artifacts_dir / f"reports-summary-{language}"
    subprocess.run([_tool("pdftoppm"), "-r", "80", "-png", str(pdf), str(prefix)], check=True)
    pngs = sorted(artifacts_dir.glob(f"reports-summary-{language}-*.png"))
    assert len(pngs) == pages and all(p.stat().st_size > 10_000 for p in pngs)

    first = subprocess.run([_tool("pdftotext"), "-layout", "-f", "1", "-l", "1", str(pdf), "-"],
                           capture_output=True, text=True, check=True).stdout
    flat = " ".join(first.split())
    for words in MUST_READ[language]:
        assert words in flat, f"{words!r} not on page 1"
    assert translate(language, "Appendix") not in first  # the appendix is not on the summary page
    assert "\ufffd" not in first

    fonts = subprocess.run([_tool("pdffonts"), str(pdf)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in fonts.splitlines()[2:] if line.strip()]
    assert rows, fonts
    for row in rows:
        assert row[-5] == "yes", f"font not embedded: {row}"  # emb column
        assert re.search(r"Noto|DejaVu", row[0]), f"an unexpected fallback font: {row[0]}"


def test_every_table_has_a_csv():
    summary = json.loads(GOLDEN.read_text())
    controls = render.csv_table(summary, "controls", "en").splitlines()
    assert controls[0] == "control,clauses,passed,total,rate"
    assert "av_full_scan,000 §5.4,3,5,0.600" in controls
    assert "pc-03" in render.csv_table(summary, "failing_seats", "en")
    assert render.csv_table(summary, "blocked", "en").splitlines()[1:] == ["games,2", "adult,1"]
    for table in render.TABLES:
        assert len(render.csv_table(summary, table, "ky").splitlines()) >= 2, table


def test_a_bad_week_of_thirty_seats_still_fits_the_summary_on_one_page(tmp_path):
    from dataclasses import replace

    from reports import data, figures
    from tests.reports.builders import week

    good = week(2026, 48, seats=30)
    bad = week(2026, 49, seats=30)
    bad = replace(bad, full_scans={}, last_heartbeat={}, heartbeat_days={}, baselines=frozenset(),
                  blocked_by_category={f"category-{i}": 100 - i for i in range(20)},
                  incidents=tuple(data.Incident(i, f"isuo.rule{i % 5}", "high", bad.period.start, None)
                                  for i in range(40)))
    summary = figures.summarise(bad, [good]).as_dict()
    assert len(summary["failing_long"]) == 0 and len(summary["regressions"]) == 6
    summary["failing_long"] = [{"seat": f"Computer lab number 2 / seat {i:02d}", "controls": ["av_full_scan"]}
                               for i in range(30)]
    pdf = tmp_path / "bad.pdf"
    pdf.write_bytes(render.pdf(summary, "ky"))
    first = subprocess.run([_tool("pdftotext"), "-f", "1", "-l", "1", str(pdf), "-"],
                           capture_output=True, text=True, check=True).stdout
    assert "Директор окуп, текшерди" in " ".join(first.split())  # the sign-off line is still on page 1
    assert translate("ky", "Appendix") not in first
