"""Shared test configuration.  Area fixtures live in tests/<area>/conftest.py;
helpers that several areas use (a real server process, a throwaway PostgreSQL
cluster) live in tests/support/."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
UT1_DIR = SHARED / "data" / "ut1"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ut1_dir() -> Path:
    if not UT1_DIR.is_dir():
        pytest.fail(f"UT1 lists not found at {UT1_DIR}; the repository expects ../shared/data/ut1 beside it")
    return UT1_DIR


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots and other things a person may want to look at after a run."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run; each test opens its own context (cookies)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (listed in install/apt-packages.txt)")
    from playwright.sync_api import sync_playwright
    # Playwright gives every launch a fresh throwaway profile (it refuses --user-data-dir here).
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def is_root() -> bool:
    return os.geteuid() == 0
