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


def is_root() -> bool:
    return os.geteuid() == 0
