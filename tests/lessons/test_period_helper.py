"""The tests' "period running now" stays a valid timetable period at any hour (a CI run after
23:15 school time failed: the period ran past midnight, which the timetable refuses)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from policy_server.timetable.service import SCHOOL_TZ, at_local
from tests.support.timetable import period_fields


@pytest.mark.parametrize("clock", ["12:00", "23:20", "23:57", "00:00", "00:03"])
def test_a_period_around_now_holds_now_inside_one_school_day(clock):
    now = at_local(datetime(2026, 12, 4).date(), clock)
    fields = period_fields(now - timedelta(minutes=5), now + timedelta(minutes=40), now=now)
    assert fields["starts"] < fields["ends"]
    assert fields["weekday"] == now.weekday() + 1
    assert fields["starts"] <= now.strftime("%H:%M") < fields["ends"]


def test_a_period_with_no_minute_left_says_to_wait():
    late = datetime(2026, 12, 4, 23, 59, tzinfo=SCHOOL_TZ)
    with pytest.raises(AssertionError, match="wait_out_midnight"):
        period_fields(late, late + timedelta(seconds=30), now=late)
