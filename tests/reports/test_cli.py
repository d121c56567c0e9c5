"""`kalkan-report` as a person runs it, on a seeded school database."""

from __future__ import annotations

import subprocess
import sys

from tests.reports.seed import seed
from tests.support.server import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_weekly_pdf_csv_and_a_range_with_a_progress_bar(api, db_url, tmp_path):
    seed(api)
    out = tmp_path / "w48.pdf"
    done = _run("weekly", "--db", db_url, "--school", "Test School", "--week", "2026-W48", "--lang", "ky",
                "--pdf", str(out), "--csv", str(tmp_path / "csv"))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"%PDF")
    assert "av_full_scan,000 §5.4,3,5,0.600" in (tmp_path / "csv" / "controls.csv").read_text()
    ranged = _run("weekly", "--db", db_url, "--from", "2026-09-01", "--to", "2026-11-29", "--json",
                  str(tmp_path / "term.json"))
    assert ranged.returncode == 0, ranged.stderr
    assert "] 13/13 weeks" in ranged.stderr and "[" + "#" * 30 + "]" in ranged.stderr
    import json

    term = json.loads((tmp_path / "term.json").read_text())
    assert term["period"] == "2026-09-01..2026-11-29" and len(term["trend"]) == 13
    assert term["controls"][0]["total"] == 5


def test_a_wrong_school_or_week_is_refused_with_the_fix(api, db_url, tmp_path):
    api.code()  # the school exists
    wrong = _run("weekly", "--db", db_url, "--school", "Other School", "--week", "2026-W48", "--pdf",
                 str(tmp_path / "x.pdf"))
    assert wrong.returncode == 2 and "not 'Other School'" in wrong.stderr
    bad = _run("weekly", "--db", db_url, "--week", "2026-49", "--pdf", str(tmp_path / "x.pdf"))
    assert bad.returncode == 2 and "YEAR-Www" in bad.stderr
    running = _run("make", "--db", db_url, "--week", "2030-W01")
    assert running.returncode == 2 and "not over yet" in running.stderr
