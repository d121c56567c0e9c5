"""The chaos run, short (benchmarks/chaos/chaos.py has the long one and its figures): real
server and agents; the server restarted and killed, an agent killed mid-upload, the disk
under the database full for a while; every event stored exactly once, none moved aside."""

from __future__ import annotations

import os

import pytest

from benchmarks.chaos.chaos import CI, run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_faults_lose_and_double_nothing(backend):
    if os.geteuid() != 0:
        pytest.fail("the chaos test mounts a tmpfs: run it as root (as CI does)")
    result = run(CI, backend, log=lambda _line: None)
    assert (result.lost, result.duplicated, result.rejected, result.dropped) == (0, 0, 0, 0), result
    assert result.stored == result.events >= CI.agents * CI.events_per_agent
    assert (result.restarts, result.kills, result.agent_kills) == (CI.restarts, CI.kills, CI.agent_kills)
    assert result.drain_after_disk_full_s is not None and result.drain_after_disk_full_s <= 30, result
    assert result.drain_after_last_fault_s is not None and result.drain_after_last_fault_s <= 30, result
