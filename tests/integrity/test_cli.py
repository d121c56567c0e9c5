"""`kalkan-agent integrity baseline|check` as a person runs it (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, lang: str = "en") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent.integrity.cli", "integrity", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"LANG": lang, "PATH": "/usr/bin:/bin"},
    )


def test_baseline_then_check_with_exit_codes_and_languages(tree, tmp_path):
    common = [
        "--state-dir",
        str(tmp_path / "agent"),
        "--key-dir",
        str(tmp_path / "key"),
        "--paths",
        str(tree),
    ]
    missing = run("check", *common, "--no-report")
    assert missing.returncode == 2 and "kalkan-agent integrity baseline" in missing.stderr
    made = run("baseline", *common, "--no-report")
    assert made.returncode == 0, made.stderr
    assert "Baseline version 0: 5 files" in made.stdout and "Hashing [" in made.stderr  # the progress bar
    clean = run("check", *common, "--no-report")
    assert clean.returncode == 0 and "No changes." in clean.stdout
    (tree / "bin/editor").write_bytes(b"changed")
    changed = run("check", *common, "--no-report", "--full", lang="ru_RU.UTF-8")
    assert changed.returncode == 1
    assert "изменён" in changed.stdout and "НЕ пакетный менеджер" in changed.stdout
    ky = run("check", *common, "--no-report", lang="ky_KG.UTF-8")
    assert "өзгөртүлдү" in ky.stdout


def test_check_reports_to_the_agent_outbox(tree, tmp_path):
    common = [
        "--state-dir",
        str(tmp_path / "agent"),
        "--key-dir",
        str(tmp_path / "key"),
        "--paths",
        str(tree),
    ]
    assert run("baseline", *common).returncode == 0
    (tree / "lib/data.txt").unlink()
    assert run("check", *common, "--json").returncode == 1
    import sqlite3

    db = sqlite3.connect(tmp_path / "agent/outbox.sqlite")
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    text = " ".join(str(row) for t in tables for row in db.execute(f"SELECT * FROM {t}"))
    assert "integrity.baseline" in text and "integrity.changed" in text and "data.txt" in text


def test_a_bad_path_in_the_policy_is_a_clear_error(tmp_path):
    result = run(
        "check",
        "--state-dir",
        str(tmp_path),
        "--key-dir",
        str(tmp_path / "k"),
        "--paths",
        "usr/bin",
        "--no-report",
    )
    assert result.returncode == 3 and "absolute path" in result.stderr
