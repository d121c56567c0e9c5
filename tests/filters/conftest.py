"""Fixtures of the filters tests: a compiled real UT1 index (built once per session
into a temporary folder, never into the repository) and a policy-bundle builder that
goes through the real wire protocol, so the bundle JSON is exactly what agents get."""

from __future__ import annotations

from pathlib import Path

import pytest

from filters.index import CategoryIndex, Source, compile_index


@pytest.fixture(scope="session")
def ut1_index(ut1_dir: Path, tmp_path_factory) -> CategoryIndex:
    out = tmp_path_factory.mktemp("kidx") / "ut1.kidx"
    problems = []
    stats = compile_index([Source(str(ut1_dir), "ut1")], out, on_problem=problems.append)
    assert stats.keys > 300_000, stats
    index = CategoryIndex.open(out, verify=True)
    index.compile_problems = problems
    return index
