"""Fixtures of the package tests: `debs` builds the packages once per test session with
`bash install/build-debs.sh` (about a minute with pip's cache warm, a few without), unless
`KALKAN_DEBS_DIR` names a folder holding them already (then those are tested as they are)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    given = os.environ.get("KALKAN_DEBS_DIR")
    folder = Path(given or REPO / "dist").resolve()
    if not given:
        subprocess.run(["bash", str(REPO / "install/build-debs.sh")], check=True, cwd=REPO, timeout=1200)
    found = {p: sorted(folder.glob(f"{p}_*_amd64.deb")) for p in ("kalkan-agent", "kalkan-server")}
    missing = [p for p, files in found.items() if not files]
    assert not missing, f"no {', '.join(missing)} package in {folder}: run bash install/build-debs.sh"
    return {p: files[-1] for p, files in found.items()}
