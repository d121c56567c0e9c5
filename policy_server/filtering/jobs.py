"""The filtering domain's scheduled jobs (run by policy_server/checks/scheduler.py)."""

from __future__ import annotations

from pathlib import Path

from policy_server.checks.scheduler import Job

LISTS_CHECK_S = 3600.0  # the job looks hourly; the update itself runs once a week
EXPIRY_CHECK_S = 60.0


def filtering_jobs(state_dir: Path) -> list[Job]:
    from policy_server.filtering.lists import weekly_job
    from policy_server.filtering.queue import expire_job

    return [Job(name="filtering.lists_weekly", interval_s=LISTS_CHECK_S, run=weekly_job(Path(state_dir))),
            Job(name="filtering.expire_allows", interval_s=EXPIRY_CHECK_S, run=expire_job)]
