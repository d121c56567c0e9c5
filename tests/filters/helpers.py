"""Helpers of the filters tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from filters.policy import FilterPolicy
from policy_server.protocol import PolicyBundle

# Monday 2025-03-03 10:15 in Bishkek (UTC+6) = 04:15 UTC.
MONDAY_MORNING = datetime(2025, 3, 3, 4, 15, tzinfo=UTC)


def make_policy(**sections) -> FilterPolicy:
    """A FilterPolicy from a real PolicyBundle built with the given sections."""
    bundle = PolicyBundle.model_validate(sections)
    return FilterPolicy.from_bundle(bundle.model_dump(mode="json"))


def lesson(room="lab1", mode="open", group=None, allow_list=(), at=MONDAY_MORNING, minutes=45, id_="L1"):
    return {"id": id_, "room": room, "teacher": "t.aliev", "group": group, "mode": mode,
            "allow_list": list(allow_list), "starts_at": (at - timedelta(minutes=5)).isoformat(),
            "ends_at": (at + timedelta(minutes=minutes)).isoformat()}
