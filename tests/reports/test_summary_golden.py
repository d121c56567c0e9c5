"""The summary of a seeded week, through the real ingest and the query module, against a golden
file (tests/reports/golden/2026-W48.json; regenerate with KALKAN_GOLDEN=write and read the diff)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from policy_server.summaries import service
from tests.reports.seed import seed

GOLDEN = Path(__file__).parent / "golden" / "2026-W48.json"
MADE = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def test_the_seeded_week_gives_the_golden_summary(api):
    seed(api)
    with api.db() as db:
        summary = service.compute_week(db, 2026, 48, now=MADE).as_dict()
    got = json.loads(json.dumps(summary, sort_keys=True))
    if os.environ.get("KALKAN_GOLDEN") == "write":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_a_kept_week_is_made_once_and_never_replaced(api):
    seed(api)
    with api.db() as db:
        report, made = service.make_weekly(db, 2026, 48, now=MADE)
        db.commit()
        again, made_again = service.make_weekly(db, 2026, 48, now=datetime(2026, 12, 1, tzinfo=UTC))
        assert (made, made_again, again.id) == (True, False, report.id)
        assert again.made_at == MADE
        assert "pc-" not in json.dumps(report.aggregates)
