"""Fixtures for the lessons tests: the real app on a fresh database (SQLite; PostgreSQL with
the `postgres` mark), two labs, two teachers, one period running now in each lab."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from policy_server.app import create_app
from policy_server.settings import Settings
from tests.server.conftest import PASSWORD, Api, db_url  # noqa: F401  (fixtures)
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)
from tests.support.timetable import period_now


class School(Api):
    agents: dict

    def period(self, *, teacher: str, room: str, cls: str = "7-Б", ago: timedelta = timedelta(minutes=5),
               minutes: int = 45, fields: dict | None = None) -> int:
        """A period of `teacher` in `room`: by default one running now (begun `ago`), else at
        `fields` (add_period's weekday, starts, ends)."""
        from policy_server.people.service import get_person_by_username
        from policy_server.scope import viewer_for
        from policy_server.timetable.service import add_period

        fields = fields or period_now(ago=ago, length=timedelta(minutes=minutes))
        with self.db() as db:
            boss = viewer_for(db, get_person_by_username(db, "boss"))
            period = add_period(db, boss, **fields, room=room, school_class=cls, teacher=teacher)
            db.commit()
            return period.id


@pytest.fixture
def school(db_url: str, tmp_path: Path) -> Iterator[School]:  # noqa: F811
    app = create_app(Settings(state_dir=tmp_path / "state", db_url=db_url, tls=False))
    with TestClient(app) as client:
        s = School(client=client, app=app)
        s.user("admin", "boss")
        s.agents = {}
        for room, seats in (("lab-1", ("s1", "s2", "s3")), ("lab-2", ("s1", "s2"))):
            for seat in seats:
                s.agents[(room, seat)] = s.enroll(f"{room}-{seat}", seat=seat, room=room)
        s.user("teacher", "aigul")
        s.user("teacher", "bakyt")
        yield s


@pytest.fixture
def now_periods(school: School) -> dict[str, int]:
    """A period running now: aigul in lab-1 (7-Б), bakyt in lab-2 (8-А)."""
    return {"aigul": school.period(teacher="aigul", room="lab-1", cls="7-Б"),
            "bakyt": school.period(teacher="bakyt", room="lab-2", cls="8-А")}
