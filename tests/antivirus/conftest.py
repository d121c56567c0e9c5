"""Antivirus fixtures: a real clamd with Kalkan's test signatures, an in-memory event sink."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.clamd import EICAR, TESTFILES, ClamdProcess
from tests.support.recording_sink import RecordingSink


@pytest.fixture(scope="session")
def clamd(tmp_path_factory) -> ClamdProcess:
    process = ClamdProcess(tmp_path_factory.mktemp("clamd"), built_at=datetime.now(UTC) - timedelta(days=1))
    process.start()
    yield process
    process.stop()


@pytest.fixture()
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture()
def infected_tree(tmp_path) -> dict:
    """A small tree: clean files, EICAR, and some clamav-testfiles samples (packed, archived)."""
    root = tmp_path / "tree"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "games").mkdir()
    for i in range(40):
        (root / "docs" / f"note{i:02}.txt").write_text(f"clean note {i}\n" * (i + 1))
    (root / "docs" / "deep" / "eicar.com").write_bytes(EICAR)
    samples = ["clam.exe", "clam.zip", "clam-upx.exe", "clam.7z"]
    for name in samples:
        shutil.copy(TESTFILES / name, root / "games" / name)
    (root / "games" / "readme.txt").write_text("a clean file\n")
    secret = root / "docs" / "root-only.bin"
    secret.write_bytes(EICAR)
    secret.chmod(0o600)
    infected = {str(root / "docs" / "deep" / "eicar.com"), str(secret)}
    infected |= {str(root / "games" / n) for n in samples}
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    size = sum(Path(p).stat().st_size for p in files)
    return {"root": root, "infected": infected, "files": files, "bytes": size}


def files_in(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file())
