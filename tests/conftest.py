"""Shared test configuration.  Area fixtures live in tests/<area>/conftest.py;
helpers that several areas use (a real server process, a throwaway PostgreSQL
cluster) live in tests/support/."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# The full UT1 lists: ../shared/data/ut1 beside the checkout, or KALKAN_UT1_DIR.  Only the larger
# tests use them, and skip when they are absent (a clone alone); the small UT1-format fixture
# in tests/fixtures/ut1/ is always there.
UT1_DIR = Path(os.environ.get("KALKAN_UT1_DIR") or SHARED / "data" / "ut1")
UT1_FIXTURE = REPO / "tests" / "fixtures" / "ut1" / "ut1-small.tar.gz"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ut1_dir() -> Path:
    if not UT1_DIR.is_dir():
        pytest.skip(f"the full UT1 lists are not at {UT1_DIR} (../shared/data/ut1 beside the checkout, or "
                    "KALKAN_UT1_DIR); the small fixture tests/fixtures/ut1/ covers the rest")
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


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module; each test opens its own context (cookies).

    Per module, not per run: Playwright's sync API keeps an event loop running in the main
    thread while it is open, and a later test's `asyncio.run()` would fail inside it."""
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


def assert_fits_width(page) -> None:
    """The page is no wider than the browser's window: nothing cut off or hidden to the right
    (a table or a long word that widens the page on a 390 px phone fails here)."""
    width = page.viewport_size["width"]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide in a {width} px window: something is cut off"


def is_root() -> bool:
    return os.geteuid() == 0
